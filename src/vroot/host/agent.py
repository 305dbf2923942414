"""The host agent (`vroot host run DIR`): owns the host TM connection and every vTM of the host.

On start it takes the host directory's lock (one agent per host), connects to the host TM
(adopting a simulated host's running swtpm, or starting and booting it), re-adopts the vTMs
whose swtpm still runs and restarts those that should run. Then it serves the local API
(`_localapi`) one request at a time and, between requests, restarts any vTM whose swtpm died.
Migration steps (`vroot.migration.engine`) are `POST /v1/migrations/<step>`; the engine's journals
are recovered at start, after the vTMs are restored.
SIGTERM or SIGINT stops it; vTMs keep running unless the shutdown asks to stop them.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vroot._fs import atomic_write, make_private_dir
from vroot.attestation.host import UnverifiedHostEvidence
from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.host._config import AK_HANDLE, EK_HANDLE, MANAGER_HANDLE, HostPaths, load_config
from vroot.host._hosttm import HostTm
from vroot.host._localapi import AgentServer, Response
from vroot.host._provision import check_provisioned, load_host_keys
from vroot.measure._launch import LAUNCH_PCR
from vroot.tpm2 import HashAlg

__all__ = ["DEEP_QUOTE_PCRS", "HostAgent"]

log = logging.getLogger("vroot.host")
DEEP_QUOTE_PCRS = (*range(11), LAUNCH_PCR)
_VTM_PATH = re.compile(r"^/v1/vtms/([0-9a-fA-F-]{36})(?:/([a-z-]+))?$")


class HostAgent:
    """One host's agent. Build with `HostAgent.start(dir)`; run with `serve()`; end with `close()`."""

    def __init__(self, paths: HostPaths, host: HostTm, manager, lock_fd: int, migrations=None) -> None:  # noqa: ANN001
        self.paths = paths
        self.host = host
        self.manager = manager
        self.migrations = migrations  # vroot.migration.engine.MigrationEngine
        self.config = host.config
        self._lock_fd = lock_fd
        self._stopping = False
        self._stop_vtms_on_exit = False
        self._stop_tm_on_exit = False

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: Callable[[int], bytes] = os.urandom,
    ) -> HostAgent:
        from vroot.migration.engine import MigrationEngine
        from vroot.vtm import VtmManager

        paths = HostPaths(directory)
        config = load_config(paths)
        keys = load_host_keys(paths)
        lock_fd = os.open(paths.agent_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise Conflict(f"another host agent runs on {paths.root}") from None
        try:
            host = HostTm.open(config, paths)
            try:
                check_provisioned(host.client)
                manager = VtmManager(config, paths, host, keys, clock=clock, rng=rng)
                for message in manager.restore():
                    log.info("%s", message)
                migrations = MigrationEngine(manager)
                for message in migrations.recover():  # after restore: journals decide locked vTMs
                    log.info("%s", message)
            except BaseException:
                host.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(paths, host, manager, lock_fd, migrations)

    # -- serving ----------------------------------------------------------------------------------

    def serve(self, *, check_interval: float = 1.0, on_ready: Callable[[], None] | None = None) -> None:
        """Serve the local API until `stop()` or SIGTERM/SIGINT; check vTM processes every interval."""
        server = AgentServer(self.paths.agent_socket, self.handle)
        server.timeout = min(0.2, check_interval)
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
            except ValueError:  # not the main thread (tests): stop() through the API instead
                pass
        log.info("host agent for %s serving on %s", self.config.host_id, self.paths.agent_socket)
        if on_ready is not None:
            on_ready()
        last_check = time.monotonic()
        try:
            while not self._stopping:
                server.handle_request()
                if time.monotonic() - last_check >= check_interval:
                    last_check = time.monotonic()
                    for message in self.manager.check():
                        log.warning("%s", message)
        finally:
            server.server_close()
            try:
                self.paths.agent_socket.unlink()
            except FileNotFoundError:
                pass
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()

    def stop(self, *, stop_vtms: bool = False, stop_tm: bool = False) -> None:
        self._stop_vtms_on_exit |= stop_vtms
        self._stop_tm_on_exit |= stop_tm
        self._stopping = True

    def close(self) -> None:
        """Release the host TM and the lock; stop vTMs / the simulated TM if a shutdown asked to."""
        try:
            if self._stop_vtms_on_exit:
                self.manager.stop_all()
        finally:
            try:
                self.host.close(stop_tm=self._stop_tm_on_exit)
            finally:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)
                    self._lock_fd = -1

    # -- the API ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: dict) -> Response:
        """Route one request. Raises `vroot.errors` classes, which the server turns into problems."""
        if path == "/v1/host" and method == "GET":
            return 200, self._host_info()
        if path == "/v1/vtms":
            if method == "GET":
                return 200, {"vtms": [s.to_json() for s in self.manager.list()]}
            if method == "POST":
                tcp_port = body.get("tcp_port")
                if tcp_port is not None and (not isinstance(tcp_port, int) or not 1024 <= tcp_port <= 65534):
                    raise InvalidInput("tcp_port must be an integer 1024-65534")
                status = self.manager.create(
                    _str(body, "vm_uuid"), kind=str(body.get("kind", "ecc")), tcp_port=tcp_port
                )
                return 201, status.to_json()
        match = _VTM_PATH.match(path)
        if match:
            return self._vtm(method, match.group(1), match.group(2), body)
        if path == "/v1/deep-quote" and method == "POST":
            return 200, self.deep_quote(body).to_json()
        if path == "/v1/activate-credential" and method == "POST":
            return 200, self.activate_credential(body)
        if path.startswith("/v1/migrations/") and method == "POST":
            return 200, self.migrations.handle(path.removeprefix("/v1/migrations/"), body)
        if path == "/v1/reboot" and method == "POST":
            return 200, self._reboot()
        if path == "/v1/shutdown" and method == "POST":
            self.stop(stop_vtms=bool(body.get("stop_vtms")), stop_tm=bool(body.get("stop_tm")))
            return 200, {"stopping": True}
        raise NotFound(f"no such endpoint: {method} {path}")

    def _vtm(self, method: str, vm_uuid: str, action: str | None, body: dict) -> Response:
        m = self.manager
        if action is None and method == "GET":
            return 200, m.status(m.record(vm_uuid)).to_json()
        if action is None and method == "DELETE":
            m.destroy(vm_uuid)
            return 200, {"destroyed": vm_uuid}
        if method != "POST":
            raise NotFound(f"no such endpoint: {method} vTM {action or ''}")
        if action == "start":
            return 200, m.start(vm_uuid).to_json()
        if action == "stop":
            return 200, m.stop(vm_uuid).to_json()
        if action == "boot":
            return 200, self._boot_vm(vm_uuid, Path(_str(body, "image_dir")))
        if action in ("seal", "unseal", "binding-key", "unbind"):
            return 200, self._protect(vm_uuid, action, body)
        if action == "certificate":
            return 200, {"der": base64.b64encode(m.vtm_paths(vm_uuid).vek_certificate.read_bytes()).decode()}
        if action in ("attestation-key", "activate-credential", "guest-quote"):
            return 200, self._guest(vm_uuid, action, body)
        raise NotFound(f"no such vTM action: {action}")

    def _guest(self, vm_uuid: str, action: str, body: dict) -> dict:
        """The guest attester of a simulated VM, on its vTM (`vroot.agent._guest_tm`; RA-1, RA-3): its
        vAK (made once, persistent in the vTM; `{"new": true}` replaces it), credential activation with
        it, and a quote with it over the server's nonce with the logs of the VM's last boot."""
        from vroot.agent._guest_tm import guest_activate, guest_evidence, guest_identity

        kind = self.manager.record(vm_uuid).kind
        if action == "guest-quote":
            try:
                nonce = bytes.fromhex(_str(body, "nonce"))
            except ValueError:
                raise InvalidInput("nonce must be hex") from None
            pcrs = body.get("pcrs")
            if not 1 <= len(nonce) <= 64 or not isinstance(pcrs, list) or not 1 <= len(pcrs) <= 24 or not all(
                type(i) is int and 0 <= i <= 23 for i in pcrs
            ):
                raise InvalidInput("a guest quote needs a 1-64 byte hex nonce and a list of PCR indices 0-23")
            bank = HashAlg.from_bank(str(body.get("bank", "sha256")))
            logs = self.manager.vtm_paths(vm_uuid).guest
            boot, ima = (logs / "boot.tcg", logs / "ima.bin")
        with self.manager.open_vtm(vm_uuid) as vtm:
            if action == "attestation-key":
                identity = guest_identity(vtm, kind=kind, new_vak=body.get("new") is True)
                # The vEK certificate this host's manager issued: after a migration the one in the vTM's
                # NV is still the source host's (a running guest's NV cannot be rewritten).
                current = self.manager.vtm_paths(vm_uuid).vek_certificate
                if current.is_file():
                    identity = dataclasses.replace(identity, vek_certificate=current.read_bytes())
                return identity.to_json()
            if action == "activate-credential":
                secret = guest_activate(vtm, _b64(body, "credential_blob"), _b64(body, "encrypted_secret"), kind=kind)
                return {"secret": base64.b64encode(secret).decode()}
            return guest_evidence(vtm, nonce, {bank: sorted(set(pcrs))}, boot_log=_read(boot), ima_log=_read(ima))

    def _protect(self, vm_uuid: str, action: str, body: dict) -> dict:
        """Guest data protection on the vTM (DP-1, DP-2), as software in the VM would use it."""
        from vroot import guest

        with self.manager.open_vtm(vm_uuid) as vtm:
            if action == "binding-key":
                return {"pem": guest.binding_public_key(vtm).decode()}
            if action == "seal":
                bank = HashAlg.from_bank(str(body.get("bank", "sha256")))
                pcrs = body.get("pcrs")
                if not isinstance(pcrs, list) or not all(isinstance(i, int) for i in pcrs):
                    raise InvalidInput("pcrs must be a list of PCR indices")
                blob = guest.seal(vtm, _b64(body, "data"), pcrs={bank: pcrs})
                return {"blob": base64.b64encode(blob.encode()).decode()}
            data = (guest.unseal if action == "unseal" else guest.unbind)(vtm, _b64(body, "blob"))
            return {"data": base64.b64encode(data).decode()}

    def _host_info(self) -> dict:
        return {
            "host_id": self.config.host_id,
            "mode": self.config.mode,
            "banks": [b.bank for b in self.host.banks],
            "trusted_pcrs": list(self.config.trusted_pcrs),
            "labels": self.config.labels,
            "pid": os.getpid(),
            "vtms": len(self.manager.list()),
        }

    def _boot_vm(self, vm_uuid: str, image_dir: Path) -> dict:
        """Simulated VM boot (TT-3, VM-F3): power-cycle the vTM, then play the VM chain into it."""
        from vroot.measure import VM_CHAIN, ImageDir, measured_boot

        if not image_dir.is_dir():
            raise NotFound(f"image directory {image_dir} does not exist")
        m = self.manager
        m.stop(vm_uuid, desired="running")
        m.start(vm_uuid)
        with m.open_vtm(vm_uuid) as vtm:
            record = measured_boot(vtm, VM_CHAIN, ImageDir(image_dir))
            pcrs = vtm.pcr_read({HashAlg.SHA256: range(11)})[HashAlg.SHA256]
        guest = m.vtm_paths(vm_uuid).guest
        make_private_dir(guest)
        atomic_write(guest / "boot.tcg", record.tcg_log)
        atomic_write(guest / "ima.bin", record.ima_log)
        return {"vm_uuid": vm_uuid, "pcrs": {"sha256": {str(i): v.hex() for i, v in pcrs.items()}},
                "events": len(record.plan.measurements)}  # fmt: skip

    def activate_credential(self, body: dict) -> dict:
        """TPM2_ActivateCredential with the host's AK and EK (RA-1): a verifier that made a credential
        for the AK's name with the EK's public key learns that both keys are in this TM. The secret is
        the verifier's own challenge; returning it reveals nothing else."""
        blob, encrypted = _b64(body, "credential_blob"), _b64(body, "encrypted_secret")
        if not 0 < len(blob) <= 1024 or not 0 < len(encrypted) <= 1024:
            raise InvalidInput("credential_blob and encrypted_secret are 1-1024 bytes each")
        tm = self.host.client
        with tm.persistent(AK_HANDLE) as ak, tm.persistent(EK_HANDLE) as ek:
            secret = tm.activate_credential(ak, ek, blob, encrypted)
        return {"secret": base64.b64encode(secret).decode()}

    def deep_quote(self, body: dict) -> UnverifiedHostEvidence:
        """Quote host PCRs over caller-chosen qualifying data, with everything a verifier needs (VMM-F5)."""
        try:
            qualifying = bytes.fromhex(_str(body, "qualifying_data"))
        except ValueError:
            raise InvalidInput("qualifying_data must be hex") from None
        if not 1 <= len(qualifying) <= 64:
            raise InvalidInput("qualifying_data must be 1-64 bytes")
        bank = self.config.trusted_bank
        selection = {bank: DEEP_QUOTE_PCRS}
        tm = self.host.client
        with tm.persistent(AK_HANDLE) as ak, tm.persistent(MANAGER_HANDLE) as manager:
            attest, signature = tm.quote(ak, selection, qualifying)
            fresh_attest, fresh_signature = tm.certify(manager, ak, qualifying_data=qualifying)
        pcrs = tm.pcr_read(selection)
        keys = self.manager.keys
        return UnverifiedHostEvidence(
            host_id=self.config.host_id,
            qualifying_data=qualifying,
            quote_attest=attest,
            quote_signature=signature,
            pcrs={bank: dict(pcrs[bank])},
            ak_public=keys.ak_public,
            ek_certificate=keys.ek_certificate,
            boot_log=self.host.boot_log(),
            ima_log=self.host.ima_log(),
            launch_log=self.host.launch_log.encoded(),
            manager_public=keys.manager_public,
            manager_certify_attest=keys.manager_certify_attest,
            manager_certify_signature=keys.manager_certify_signature,
            manager_fresh_certify_attest=fresh_attest,
            manager_fresh_certify_signature=fresh_signature,
        )

    def _reboot(self) -> dict:
        """Simulated hosts: every VM goes down with the host; the TM power-cycles and re-measures the
        boot; vTMs that should run are started again — only if the host is still in its trusted state."""
        self.manager.stop_all()
        self.host.reboot()
        messages = []
        for status in self.manager.list():
            if status.record.desired == "running":
                try:
                    self.manager.start(status.record.vm_uuid)
                    messages.append(f"vTM {status.record.vm_uuid} started")
                except Exception as exc:
                    messages.append(f"vTM {status.record.vm_uuid} not started: {exc}")
        return {"rebooted": self.config.host_id, "messages": messages}


def _b64(body: dict, key: str) -> bytes:
    try:
        return base64.b64decode(_str(body, key), validate=True)
    except ValueError:
        raise InvalidInput(f"{key!r} must be base64") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _str(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"request needs a string {key!r}")
    return value
