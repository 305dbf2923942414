"""The migration engine of one host (DESIGN.md section 6; MIG-4..10, VMM-S4, DP-4).

Each step is one call whose inputs and output are JSON values (bytes as base64), so a controller
can send each as an agent task (`handle(step, body)`); each result carries `timings` in ms.

    destination                                 source
    prepare_in(ticket)          -> target       export_out(ticket, target, destination_ak_public)
                                                      -> blob   (verifies the target, locks, exports)
    import_in(migration_id, blob) -> proof
    -- the controller commits --
    finalize_in(migration_id)   (unlock)        finalize_out(migration_id)   (destroy the copy)
    -- or, before commit --
    abort_in(migration_id)      (discard)       abort_out(migration_id)      (resume)

One live copy: the source is locked (durably: record and journal) before its state is read, and
stays locked until finalize (destroyed) or abort (resumed). The destination's copy is installed
locked (its swtpm stopped, volatile state stored encrypted) and starts serving only at finalize,
after the controller's commit. A host that crashes converges with `recover()` (run at agent start):
a source caught while locking resumes (its blob never left); a committed side completes; a
destination caught importing discards the half and may be sent the blob again; a source that
exported, or a destination that imported, waits for the controller's commit or abort.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import datetime

from vroot.errors import (
    Conflict,
    InvalidInput,
    MigrationBlobDuplicated,
    MigrationBlobExpired,
    MigrationBlobMisdirected,
    MigrationBlobReplayed,
    MigrationBlobTampered,
    MigrationStateMismatch,
    NotFound,
    TmError,
)
from vroot.host._config import AK_HANDLE, SRK_HANDLE
from vroot.migration._journal import JournalStore
from vroot.migration.blob import BlobHeader, build_blob, decode_state, encode_state, open_state, parse_blob
from vroot.migration.protocol import (
    Journal,
    MigrationTicket,
    names_equal,
    new_journal,
    next_state,
    parse_migration_id,
    verify_target,
)
from vroot.vtm import _migration as vtm_migration

__all__ = ["MigrationEngine", "STEPS"]

# The controller's task kinds (DESIGN.md section 5) for the steps named here otherwise.
_TASK_KINDS = {"prepare-migration-in": "prepare-in", "migrate-out": "export-out", "import": "import-in"}
STEPS = (
    "prepare-in",
    "export-out",
    "import-in",
    "finalize-in",
    "finalize-out",
    "abort-in",
    "abort-out",
    "status",
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(body: dict, key: str) -> bytes:
    value = body.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"request needs a base64 string {key!r}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InvalidInput(f"{key!r} must be base64") from None


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


class MigrationEngine:
    """Migration steps over one host's vTM manager (which holds the host TM). Not thread-safe: the
    host agent serves one request at a time."""

    def __init__(
        self,
        manager,  # noqa: ANN001 - vroot.vtm.VtmManager
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.manager = manager
        self.clock = clock or manager.clock
        self.journals = JournalStore(manager.paths.root / "migrations")

    @property
    def host_id(self) -> str:
        return self.manager.config.host_id

    def _now(self) -> float:
        return self.clock().timestamp()

    def _save(self, journal: Journal, state: str, detail: str = "") -> Journal:
        return self.journals.save(next_state(journal, state, now=self._now(), detail=detail))

    def _journal(self, migration_id: str, role: str) -> Journal:
        journal = self.journals.load(migration_id)
        if journal is None or journal.role != role:
            raise NotFound(f"no migration {migration_id} as {role} on host {self.host_id}")
        return journal

    def _check_expiry(self, ticket: MigrationTicket, what: str) -> None:
        now = self._now()
        if now > ticket.expires_at:
            raise MigrationBlobExpired(
                f"migration {ticket.migration_id} expired {int(now - ticket.expires_at)} s ago: no {what}"
            )

    # -- destination ------------------------------------------------------------------------------

    def prepare_in(self, ticket: MigrationTicket) -> dict:
        """MIG-4: certify this TM's migration target key with the AK over H(migration id ‖ nonce).

        The target key is the host's storage root key (restricted decrypt, fixedTPM, at 0x81000001): the
        import parent that only this TM holds. Idempotent while `prepared`.
        """
        t0 = time.perf_counter()
        if ticket.destination_host != self.host_id:
            raise MigrationBlobMisdirected(
                f"migration {ticket.migration_id} is for host {ticket.destination_host}, this is {self.host_id}"
            )
        self._check_expiry(ticket, "preparation")
        journal = self.journals.load(ticket.migration_id)
        if journal is not None and (journal.role != "destination" or journal.state != "prepared"):
            raise MigrationBlobReplayed(f"migration {ticket.migration_id} is already {journal.state} here")
        if journal is not None and journal.ticket != ticket:
            raise Conflict(f"migration {ticket.migration_id} was prepared with another ticket")
        if self.manager.vtm_paths(ticket.vm_uuid).record.exists():
            raise MigrationBlobDuplicated(f"host {self.host_id} already has a vTM for VM {ticket.vm_uuid}")
        tm = self.manager.host.client
        with tm.persistent(SRK_HANDLE) as target, tm.persistent(AK_HANDLE) as ak:
            attest, signature = tm.certify(target, ak, qualifying_data=ticket.qualifying_data)
            public, name = target.public, target.name
        if journal is None:
            self.journals.save(
                new_journal("destination", ticket, "prepared", now=self._now(), target_name=name)
            )
        return {
            "migration_id": ticket.migration_id,
            "host_id": self.host_id,
            "target_public": _b64(public),
            "certify_attest": _b64(attest),
            "certify_signature": _b64(signature),
            "timings": {"prepare_ms": _ms(t0)},
        }

    def import_in(self, migration_id: str, blob: bytes, *, tcp_port: int | None = None) -> dict:
        """MIG-7: check the blob against the prepared migration, open it inside this TM, install the
        vTM (locked until finalize), prove it is the exported one, issue its new vEK certificate."""
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        migration_id = parse_migration_id(migration_id)
        journal = self.journals.load(migration_id)
        if journal is None or journal.role != "destination":
            raise MigrationBlobMisdirected(f"no migration {migration_id} was prepared on host {self.host_id}")
        if journal.state in ("imported", "committed", "done"):
            raise MigrationBlobReplayed(
                f"migration {migration_id} was already imported on host {self.host_id}"
            )
        if journal.state == "aborted":
            raise MigrationBlobReplayed(f"migration {migration_id} was aborted on host {self.host_id}")
        if journal.state != "prepared":
            raise Conflict(f"migration {migration_id} is {journal.state} on host {self.host_id}")
        ticket = journal.ticket
        self._check_expiry(ticket, "import")
        try:
            unverified = parse_blob(blob)
        except InvalidInput as exc:
            raise MigrationBlobTampered(f"migration {migration_id}: blob does not decode: {exc}") from exc
        h = unverified.header
        if h.migration_id != migration_id:
            raise MigrationBlobMisdirected(
                f"blob of migration {h.migration_id} offered as migration {migration_id}"
            )
        if h.destination_host != self.host_id or not names_equal(h.target_name, journal.target_name):
            raise MigrationBlobMisdirected(
                f"migration {migration_id}: blob is wrapped for host {h.destination_host}'s target key "
                f"{h.target_name.hex()[:16]}…, not this host's"
            )
        for what, got, want in (
            ("vm_uuid", h.vm_uuid, ticket.vm_uuid),
            ("vek_name", h.vek_name, ticket.vek_name),
            ("source_host", h.source_host, ticket.source_host),
            ("expires_at", h.expires_at, ticket.expires_at),
        ):
            if got != want:
                raise MigrationBlobTampered(
                    f"migration {migration_id}: header {what} differs from the migration record"
                )
        if self._now() > h.expires_at:
            raise MigrationBlobExpired(f"migration {migration_id}: blob expired")
        if self.manager.vtm_paths(ticket.vm_uuid).record.exists():
            raise MigrationBlobDuplicated(f"host {self.host_id} already has a vTM for VM {ticket.vm_uuid}")
        journal = self._save(journal, "importing")
        try:
            t0 = time.perf_counter()
            aes_key = self._unwrap_key(unverified, migration_id)
            timings["tm_import_ms"] = _ms(t0)
            t0 = time.perf_counter()
            permanent, volatile = decode_state(open_state(unverified, aes_key=aes_key))
            del aes_key
            timings["decrypt_ms"] = _ms(t0)
            record, certificate, install = vtm_migration.install_migrated(
                self.manager,
                vm_uuid=ticket.vm_uuid,
                kind=h.kind,
                vek_name=ticket.vek_name,
                permanent=permanent,
                volatile=volatile,
                vpcrs=h.vpcrs,
                migration_id=migration_id,
                tcp_port=tcp_port,
            )
            timings.update(install)
        except Exception as exc:  # a crash (the process killed) leaves this to recover()
            self._save(journal, "prepared", detail=f"import failed: {type(exc).__name__}")
            raise
        self._save(journal, "imported")
        timings["import_ms"] = _ms(t_all)
        return {
            "migration_id": migration_id,
            "host_id": self.host_id,
            "vm_uuid": ticket.vm_uuid,
            "vek_name": ticket.vek_name.hex(),
            "vek_certificate": _b64(certificate),
            "vpcrs": {"sha256": {str(i): v.hex() for i, v in sorted(h.vpcrs.items())}},
            "endpoint": record.transport,
            "timings": timings,
        }

    def _unwrap_key(self, blob, migration_id: str) -> bytes:  # noqa: ANN001
        from vroot.tm import DuplicationBlob

        tm = self.manager.host.client
        dup = DuplicationBlob(blob.key_encryption_key, blob.key_duplicate, blob.key_seed)
        try:
            with tm.persistent(SRK_HANDLE) as target:
                private = tm.import_(target, blob.key_public, dup)
                key = tm.unseal(target, private)
        except (TmError, InvalidInput) as exc:
            raise MigrationBlobTampered(
                f"migration {migration_id}: the blob's key does not import into this TM's target key "
                f"(wrapped for another key, or altered): {exc}"
            ) from exc
        if len(key) != 32:
            raise MigrationBlobTampered(
                f"migration {migration_id}: the wrapped key is {len(key)} bytes, not 32"
            )
        return key

    def finalize_in(self, migration_id: str) -> dict:
        """After the controller's commit (MIG-8): the imported vTM starts serving its guest."""
        t0 = time.perf_counter()
        journal = self._journal(migration_id, "destination")
        if journal.state == "done":
            return self._result(journal, t0)
        if journal.state != "committed":
            journal = self._save(journal, "committed")
        vtm_migration.unlock(self.manager, journal.ticket.vm_uuid, journal.migration_id)
        unlocked_at = time.time()
        journal = self._save(journal, "done")
        return {**self._result(journal, t0), "unlocked_at": unlocked_at}

    def abort_in(self, migration_id: str) -> dict:
        """Before commit: discard whatever this host holds of the migration (its target stays unused)."""
        t0 = time.perf_counter()
        journal = self._journal(migration_id, "destination")
        if journal.state != "aborted":
            journal = self._save(journal, "aborted", detail="aborted by the controller")
        vtm_migration.discard(self.manager, journal.ticket.vm_uuid, journal.migration_id)
        return self._result(journal, t0)

    # -- source -----------------------------------------------------------------------------------

    def export_out(
        self,
        ticket: MigrationTicket,
        *,
        target_public: bytes,
        certify_attest: bytes,
        certify_signature: bytes,
        destination_ak_public: bytes,
    ) -> dict:
        """MIG-5, MIG-6: verify the destination's target key, lock the vTM, take its complete state and
        seal it for the target key. `destination_ak_public` must come from the controller's verified
        records of the destination (its PCA-certified AK), never from the destination's answer.
        Idempotent once exported (the same blob again)."""
        t_all = time.perf_counter()
        if ticket.source_host != self.host_id:
            raise InvalidInput(
                f"migration {ticket.migration_id} moves a vTM of host {ticket.source_host}, not {self.host_id}"
            )
        journal = self.journals.load(ticket.migration_id)
        if journal is not None:
            if journal.role == "source" and journal.state == "exported" and journal.ticket == ticket:
                blob = self.journals.load_blob(ticket.migration_id)
                if blob is not None:
                    return self._export_result(journal, blob, {}, t_all)
            raise Conflict(
                f"migration {ticket.migration_id} is already {journal.state} on host {self.host_id}"
            )
        self._check_expiry(ticket, "export")
        record = self.manager.record(ticket.vm_uuid)
        if record.vek_name != ticket.vek_name.hex():
            raise MigrationStateMismatch(
                f"vTM {ticket.vm_uuid} has vEK {record.vek_name[:16]}…, the migration names {ticket.vek_name.hex()[:16]}…"
            )
        if record.locked is not None:
            raise Conflict(f"vTM {ticket.vm_uuid} is locked by migration {record.locked}")
        t0 = time.perf_counter()
        target = verify_target(
            target_public=target_public,
            certify_attest=certify_attest,
            certify_signature=certify_signature,
            ak_public=destination_ak_public,
            migration_id=ticket.migration_id,
            nonce=ticket.nonce,
        )
        timings = {"verify_target_ms": _ms(t0)}
        journal = self.journals.save(
            new_journal("source", ticket, "locking", now=self._now(), target_name=target.name)
        )
        locked_at = time.time()
        try:
            locked = vtm_migration.lock_and_save(self.manager, ticket.vm_uuid, ticket.migration_id)
            timings.update(locked.timings)
            t0 = time.perf_counter()
            blob = self._seal(ticket, locked, target)
            timings["seal_ms"] = _ms(t0)
            self.journals.save_blob(ticket.migration_id, blob)
        except Exception as exc:  # a crash (the process killed) leaves this to recover()
            try:
                vtm_migration.resume(self.manager, ticket.vm_uuid, ticket.migration_id)
            finally:
                self._save(journal, "aborted", detail=f"export failed: {type(exc).__name__}")
            raise
        journal = self._save(journal, "exported")
        return {**self._export_result(journal, blob, timings, t_all), "locked_at": locked_at}

    def _seal(self, ticket: MigrationTicket, locked, target) -> bytes:  # noqa: ANN001
        import hashlib

        from vroot.tm import wrap_sealed

        state = encode_state(locked.permanent, locked.volatile)
        rng = self.manager.rng
        aes_key, iv = rng(32), rng(12)
        header = BlobHeader(
            migration_id=ticket.migration_id,
            vm_uuid=ticket.vm_uuid,
            kind=locked.record.kind,
            vek_name=ticket.vek_name,
            state_digest=hashlib.sha256(state).digest(),
            source_host=ticket.source_host,
            destination_host=ticket.destination_host,
            target_name=target.name,
            created_at=int(self._now()),
            expires_at=ticket.expires_at,
            vpcrs=locked.vpcrs,
        )
        key_public, dup = wrap_sealed(target.public, aes_key)
        return build_blob(
            header,
            state,
            aes_key=aes_key,
            iv=iv,
            key_public=key_public,
            key_encryption_key=dup.encryption_key,
            key_duplicate=dup.duplicate,
            key_seed=dup.seed,
        )

    def _export_result(self, journal: Journal, blob: bytes, timings: dict, t_all: float) -> dict:
        header = parse_blob(blob).header
        timings = {**timings, "export_ms": _ms(t_all)}
        return {
            "migration_id": journal.migration_id,
            "host_id": self.host_id,
            "blob": _b64(blob),
            "header": header.to_json(),
            "timings": timings,
        }

    def finalize_out(self, migration_id: str) -> dict:
        """After the controller's commit (MIG-8, MIG-9): destroy the locked copy (state, sealed key,
        record). From `committed` on this source never resumes."""
        t0 = time.perf_counter()
        journal = self._journal(migration_id, "source")
        if journal.state == "done":
            return self._result(journal, t0)
        if journal.state != "committed":
            journal = self._save(journal, "committed")
        vtm_migration.discard(self.manager, journal.ticket.vm_uuid, journal.migration_id)
        journal = self._save(journal, "done")
        return self._result(journal, t0)

    def abort_out(self, migration_id: str) -> dict:
        """Before commit: unlock and resume the vTM here with its state (vPCRs kept)."""
        t0 = time.perf_counter()
        journal = self._journal(migration_id, "source")
        if journal.state != "aborted":
            journal = self._save(journal, "aborted", detail="aborted by the controller")
        vtm_migration.resume(self.manager, journal.ticket.vm_uuid, journal.migration_id)
        return self._result(journal, t0)

    # -- both -------------------------------------------------------------------------------------

    def status(self, migration_id: str) -> dict:
        journal = self.journals.load(migration_id)
        if journal is None:
            raise NotFound(f"no migration {migration_id} on host {self.host_id}")
        return journal.to_json()

    def _result(self, journal: Journal, t0: float) -> dict:
        return {
            "migration_id": journal.migration_id,
            "host_id": self.host_id,
            "role": journal.role,
            "state": journal.state,
            "timings": {"step_ms": _ms(t0)},
        }

    def recover(self) -> list[str]:
        """Converge after a restart (run once at agent start, after the vTM manager's restore)."""
        messages = []
        for journal in self.journals.all():
            mid, vm = journal.migration_id, journal.ticket.vm_uuid
            try:
                if journal.role == "source":
                    if journal.state == "locking":  # the blob never left: safe to resume
                        vtm_migration.resume(self.manager, vm, mid)
                        self._save(journal, "aborted", detail="interrupted while locking; resumed")
                        messages.append(
                            f"migration {mid}: source resumed vTM {vm} (interrupted before export)"
                        )
                    elif journal.state == "aborted":
                        vtm_migration.resume(self.manager, vm, mid)
                    elif journal.state == "committed":
                        vtm_migration.discard(self.manager, vm, mid)
                        self._save(journal, "done")
                        messages.append(f"migration {mid}: source copy of vTM {vm} destroyed (committed)")
                    elif journal.state == "exported":
                        messages.append(
                            f"migration {mid}: vTM {vm} stays locked until the controller commits or aborts"
                        )
                else:
                    if journal.state == "importing":
                        vtm_migration.discard(self.manager, vm, mid)
                        self._save(journal, "prepared", detail="interrupted while importing; discarded")
                        messages.append(f"migration {mid}: half-imported vTM {vm} discarded")
                    elif journal.state == "committed":
                        vtm_migration.unlock(self.manager, vm, mid)
                        self._save(journal, "done")
                        messages.append(f"migration {mid}: imported vTM {vm} unlocked (committed)")
                    elif journal.state == "aborted":
                        vtm_migration.discard(self.manager, vm, mid)
            except Exception as exc:  # one migration's failure must not stop the others
                messages.append(f"migration {mid}: recovery failed: {type(exc).__name__}: {exc}")
        return messages

    # -- JSON steps (agent tasks) -----------------------------------------------------------------

    def handle(self, step: str, body: dict) -> dict:
        """Run one step from its JSON request (the agent API and controller tasks)."""
        if not isinstance(body, dict):
            raise InvalidInput("a migration step takes a JSON object")
        step = _TASK_KINDS.get(step, step)
        if isinstance(body.get("target"), dict):  # the target as prepare-in returned it, nested
            body = {**body["target"], **{k: v for k, v in body.items() if k != "target"}}
        if step == "prepare-in":
            return self.prepare_in(MigrationTicket.from_json(body.get("ticket")))
        if step == "export-out":
            return self.export_out(
                MigrationTicket.from_json(body.get("ticket")),
                target_public=_unb64(body, "target_public"),
                certify_attest=_unb64(body, "certify_attest"),
                certify_signature=_unb64(body, "certify_signature"),
                destination_ak_public=_unb64(body, "destination_ak_public"),
            )
        if step == "import-in":
            port = body.get("tcp_port")
            if port is not None and (type(port) is not int or not 1024 <= port <= 65534):
                raise InvalidInput("tcp_port must be an integer 1024-65534")
            return self.import_in(str(body.get("migration_id")), _unb64(body, "blob"), tcp_port=port)
        steps = {
            "finalize-in": self.finalize_in,
            "finalize-out": self.finalize_out,
            "abort-in": self.abort_in,
            "abort-out": self.abort_out,
            "status": self.status,
        }
        if step in steps:
            return steps[step](parse_migration_id(body.get("migration_id")))
        raise NotFound(f"no migration step {step!r} (steps: {', '.join(STEPS)})")
