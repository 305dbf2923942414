"""The vTM migration protocol, pure (DESIGN.md section 6; MIG-4..9, VMM-S4): no TSS, no clock, no I/O.

- `MigrationTicket`: what the controller decided (migration id, VM, vEK name, nonce, expiry, hosts);
  both engines get it, and every later check is against it.
- `target_qualifying_data(migration_id, nonce)`: H(migration id ‖ nonce), what the destination's AK
  certifies its target key over (MIG-4).
- `verify_target(...)` -> `VerifiedTarget`: the target key is a restricted, fixedTPM storage key that
  the destination's AK certified for this migration.
- `Journal` and `next_state(journal, event)`: the per-migration state machine each engine persists.

    source:       locking -> exported -> committed -> done
                  locking | exported -> aborted          (the source resumes its vTM)
    destination:  prepared -> importing -> imported -> committed -> done
                  importing -> prepared                  (an import that failed or crashed midway)
                  prepared | importing | imported -> aborted   (the destination discards)

`committed` is entered only on the controller's word (finalize); from there the source never
resumes and the destination completes, whatever crashes in between.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field, replace

from vroot.errors import Conflict, InvalidInput, MigrationTargetInvalid, VerificationError
from vroot.tpm2 import ObjectAttributes, PublicArea, parse_public

__all__ = [
    "DESTINATION_STATES",
    "Journal",
    "MigrationTicket",
    "SOURCE_STATES",
    "TARGET_REQUIRED_ATTRIBUTES",
    "VerifiedTarget",
    "next_state",
    "parse_migration_id",
    "target_qualifying_data",
    "verify_target",
]

A = ObjectAttributes
TARGET_REQUIRED_ATTRIBUTES = A.FIXEDTPM | A.FIXEDPARENT | A.RESTRICTED | A.DECRYPT


def parse_migration_id(text: object) -> str:
    """The canonical form of a migration id (a UUID); `InvalidInput` otherwise."""
    try:
        return str(uuid.UUID(str(text).strip()))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"{text!r} is not a migration id (a UUID)") from None


def target_qualifying_data(migration_id: str, nonce: bytes) -> bytes:
    """SHA-256(migration id as 16 UUID bytes ‖ nonce): the qualifying data of the target key's
    certification (MIG-4); the same formula as `vroot.controller`'s, so the controller verifies it too."""
    return hashlib.sha256(uuid.UUID(parse_migration_id(migration_id)).bytes + bytes(nonce)).digest()


def _unix_time(value: object) -> int:
    """Unix seconds from an integer or an RFC 3339 string with a time zone."""
    if isinstance(value, str):
        from datetime import datetime

        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        return int(when.timestamp())
    if type(value) is not int:
        raise ValueError("expires_at must be Unix seconds or an RFC 3339 time")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationTicket:
    """One migration as the controller decided it. Nothing here is secret.

    `vek_name` is the TPM name of the vTM's vEK as the controller recorded it; `expires_at` is a
    Unix time after which no step may start (no blob is exported, imported or resumed as new).
    """

    migration_id: str
    vm_uuid: str
    vek_name: bytes
    nonce: bytes
    expires_at: int
    source_host: str
    destination_host: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "migration_id", parse_migration_id(self.migration_id))
        try:
            object.__setattr__(self, "vm_uuid", str(uuid.UUID(str(self.vm_uuid))))
        except ValueError:
            raise InvalidInput(f"{self.vm_uuid!r} is not a VM UUID") from None
        if not 16 <= len(self.nonce) <= 64:
            raise InvalidInput(f"migration nonce must be 16-64 bytes, got {len(self.nonce)}")
        if len(self.vek_name) < 4:
            raise InvalidInput("vek_name must be a TPM name (nameAlg ‖ digest)")
        if not isinstance(self.expires_at, int) or self.expires_at <= 0:
            raise InvalidInput("expires_at must be a positive Unix time (integer seconds)")
        for host in (self.source_host, self.destination_host):
            if not isinstance(host, str) or not host:
                raise InvalidInput("a migration names its source and destination hosts")
        if self.source_host == self.destination_host:
            raise InvalidInput("a vTM migrates to another host, not to its own")

    @property
    def qualifying_data(self) -> bytes:
        return target_qualifying_data(self.migration_id, self.nonce)

    def to_json(self) -> dict:
        return {
            "migration_id": self.migration_id,
            "vm_uuid": self.vm_uuid,
            "vek_name": self.vek_name.hex(),
            "nonce": self.nonce.hex(),
            "expires_at": self.expires_at,
            "source_host": self.source_host,
            "destination_host": self.destination_host,
        }

    @classmethod
    def from_json(cls, doc: object) -> MigrationTicket:
        if not isinstance(doc, dict):
            raise InvalidInput("a migration ticket is a JSON object")
        try:
            return cls(
                migration_id=doc["migration_id"],
                vm_uuid=doc["vm_uuid"],
                vek_name=bytes.fromhex(doc["vek_name"]),
                nonce=bytes.fromhex(doc["nonce"]),
                expires_at=_unix_time(doc["expires_at"]),
                source_host=doc["source_host"],
                destination_host=doc["destination_host"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"migration ticket: bad or missing field ({exc})") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedTarget:
    """A migration target key that passed `verify_target`.

    Proves: a key whose name is `name` (public area `area`) is restricted, decrypt-only, fixedTPM and
    fixedParent, and the holder of `ak_public` certified it as loaded in its TPM over this migration's
    qualifying data (fresh for this nonce). Does not prove: that `ak_public` belongs to the
    destination's genuine TM in a trusted state; the caller must take `ak_public` from its own
    verified records of that host (the PCA's AK certificate, the RA server's verdict), never from the
    destination's answer.
    """

    public: bytes  # TPM2B_PUBLIC as the destination sent it
    area: PublicArea
    name: bytes


def verify_target(
    *,
    target_public: bytes,
    certify_attest: bytes,
    certify_signature: bytes,
    ak_public: bytes,
    migration_id: str,
    nonce: bytes,
) -> VerifiedTarget:
    """Check the destination's migration target key (MIG-4, VMM-S4); `MigrationTargetInvalid` with the
    reason when any check fails (the cause chained).

    Checks: the target public area decodes; its attributes include fixedTPM, fixedParent, restricted
    and decrypt and exclude sign (a storage key that never leaves that TM); the certification's
    signature verifies under `ak_public`, a restricted signing key; TPM_GENERATED magic and the
    certify type; extraData = H(migration id ‖ nonce); the certified name = the target's name. A
    software key claiming to be a TM key fails the last two: no AK signed it.
    """
    from vroot.attestation import verify_certify

    try:
        area = parse_public(target_public)
    except InvalidInput as exc:
        raise MigrationTargetInvalid(f"target public area does not decode: {exc}") from exc
    attrs = int(area.object_attributes)
    missing = [a.name for a in A if a & TARGET_REQUIRED_ATTRIBUTES and not attrs & a]
    if missing:
        raise MigrationTargetInvalid(
            f"target key lacks {', '.join(str(m).lower() for m in missing)}: not a storage key fixed in one TM"
        )
    if attrs & A.SIGN_ENCRYPT:
        raise MigrationTargetInvalid("target key may sign: a storage key is decrypt-only")
    if area.name_alg is None:
        raise MigrationTargetInvalid("target key has no name algorithm")
    try:
        ak = parse_public(ak_public)
    except InvalidInput as exc:
        raise InvalidInput(f"destination AK public area does not decode: {exc}") from exc
    name = area.name()
    try:
        verify_certify(
            certify_attest,
            certify_signature,
            ak,
            qualifying_data=target_qualifying_data(migration_id, nonce),
            certified_name=name,
        )
    except (VerificationError, InvalidInput) as exc:
        raise MigrationTargetInvalid(
            f"target key certification by the destination AK does not hold: {type(exc).__name__}: {exc}"
        ) from exc
    return VerifiedTarget(public=bytes(target_public), area=area, name=name)


# --------------------------------------------------------------------------------------------
# journals: the per-migration state machine

SOURCE_STATES = ("locking", "exported", "committed", "done", "aborted")
DESTINATION_STATES = ("prepared", "importing", "imported", "committed", "done", "aborted")

_TRANSITIONS = {
    ("source", "locking", "exported"),
    ("source", "exported", "exported"),  # the same blob handed out again (idempotent retry)
    ("source", "exported", "committed"),
    ("source", "committed", "done"),
    ("source", "locking", "aborted"),
    ("source", "exported", "aborted"),
    ("destination", "prepared", "importing"),
    ("destination", "importing", "prepared"),
    ("destination", "importing", "imported"),
    ("destination", "imported", "committed"),
    ("destination", "committed", "done"),
    ("destination", "prepared", "aborted"),
    ("destination", "importing", "aborted"),
    ("destination", "imported", "aborted"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Journal:
    """One engine's durable record of one migration. Nothing secret: the source keeps the blob
    (encrypted to the destination TM) so a retried export returns the same bytes."""

    role: str  # "source" or "destination"
    state: str
    ticket: MigrationTicket
    target_name: bytes = b""  # the destination's target key name (both sides)
    history: tuple[tuple[str, float], ...] = field(default=())  # (state, Unix time entered)
    detail: str = ""

    def __post_init__(self) -> None:
        states = SOURCE_STATES if self.role == "source" else DESTINATION_STATES
        if self.role not in ("source", "destination") or self.state not in states:
            raise InvalidInput(f"migration journal: bad role/state {self.role}/{self.state}")

    @property
    def migration_id(self) -> str:
        return self.ticket.migration_id

    @property
    def finished(self) -> bool:
        return self.state in ("done", "aborted")

    def to_json(self) -> dict:
        return {
            "role": self.role,
            "state": self.state,
            "ticket": self.ticket.to_json(),
            "target_name": self.target_name.hex(),
            "history": [[s, t] for s, t in self.history],
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, doc: object) -> Journal:
        if not isinstance(doc, dict):
            raise InvalidInput("a migration journal is a JSON object")
        try:
            return cls(
                role=doc["role"],
                state=doc["state"],
                ticket=MigrationTicket.from_json(doc["ticket"]),
                target_name=bytes.fromhex(doc.get("target_name", "")),
                history=tuple((str(s), float(t)) for s, t in doc.get("history", ())),
                detail=str(doc.get("detail", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"migration journal: {exc}") from None


def new_journal(
    role: str, ticket: MigrationTicket, state: str, *, now: float, target_name: bytes = b""
) -> Journal:
    return Journal(role=role, state=state, ticket=ticket, target_name=target_name, history=((state, now),))


def next_state(journal: Journal, state: str, *, now: float, detail: str = "") -> Journal:
    """`journal` moved to `state`; `Conflict` for a move the protocol forbids (for example resuming
    a source after commit, or importing twice)."""
    if (journal.role, journal.state, state) not in _TRANSITIONS:
        raise Conflict(
            f"migration {journal.migration_id} ({journal.role}) is {journal.state}: cannot become {state}"
        )
    return replace(
        journal, state=state, history=(*journal.history, (state, now)), detail=detail or journal.detail
    )


def names_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(bytes(a), bytes(b))
