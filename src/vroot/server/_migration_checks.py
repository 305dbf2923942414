"""The controller's checks of each engine answer (MC-S4, MIG-4, MIG-6, MIG-7, MIG-10): what makes
the migration state machine move on (`vroot.controller.Checks`). Each raises a VrootError to refuse
the answer (the migration then aborts, before commit) and returns what the record keeps.

- target (the destination's `prepare-migration-in`): `vroot.migration.protocol.verify_target` with
  the destination's AK *as enrolled* (never the one in the answer): a storage key fixed in that TM,
  certified over H(migration id ‖ nonce).
- blob (the source's `migrate-out`): bounded; its header names this migration, VM, vEK, both hosts
  and the verified target key. The controller cannot open it: the AES key is wrapped to the target.
- proof (the destination's `import`): the vEK is the one enrolled for the VM; the new vEK
  certificate verifies under the destination's vTM-manager key as enrolled and names the VM and
  that host; the vPCRs read from the live vTM equal those the source exported.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from vroot.controller import Checks, Migration
from vroot.errors import InvalidInput, VerificationError
from vroot.migration.blob import parse_blob
from vroot.migration.protocol import verify_target
from vroot.pki import verify_vek_certificate
from vroot.store import Store
from vroot.tpm2 import parse_public

__all__ = ["MAX_BLOB", "migration_checks"]

MAX_BLOB = 48 * 1024 * 1024  # bytes of a blob (swtpm state is far smaller)


def _bytes(doc: Mapping[str, Any], key: str, limit: int = 64 * 1024) -> bytes:
    value = doc.get(key)
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise InvalidInput(f"the answer lacks {key} (base64, at most {limit} bytes)")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{key} is not base64") from None


def migration_checks(store: Store, *, clock: Callable[[], datetime]) -> Checks:
    """The checks, reading the hosts' and the VM's enrolled records from `store`."""

    def target(m: Migration, result: Mapping[str, Any]) -> Mapping[str, Any]:
        destination = store.agents.get(m.destination)
        if destination.ak_public is None:
            raise VerificationError(f"{m.destination} has no enrolled AK")
        public = _bytes(result, "target_public")
        attest, signature = _bytes(result, "certify_attest"), _bytes(result, "certify_signature")
        verify_target(target_public=public, certify_attest=attest, certify_signature=signature,
                      ak_public=destination.ak_public, migration_id=str(m.id), nonce=m.nonce)  # fmt: skip
        return {"target_public": result["target_public"], "certify_attest": result["certify_attest"],
                "certify_signature": result["certify_signature"]}  # fmt: skip

    def blob(m: Migration, result: Mapping[str, Any]) -> Mapping[str, Any]:
        raw = _bytes(result, "blob", MAX_BLOB)
        header = parse_blob(raw).header
        assert m.target is not None
        target_name = parse_public(base64.b64decode(m.target["target_public"])).name()
        want = {
            "migration id": (header.migration_id, str(m.id)),
            "VM": (header.vm_uuid, str(m.vm_uuid)),
            "vEK": (header.vek_name.hex(), m.ticket.get("vek_name")),
            "source host": (header.source_host, m.ticket.get("source_host")),
            "destination host": (header.destination_host, m.ticket.get("destination_host")),
            "target key": (header.target_name.hex(), target_name.hex()),
        }
        wrong = [f"{what} {got!r}, want {expected!r}" for what, (got, expected) in want.items() if got != expected]
        if wrong:
            raise VerificationError("the blob's header does not match the migration: " + "; ".join(wrong))
        vpcrs = {str(i): v.hex() for i, v in sorted(header.vpcrs.items())}
        kept = {"blob": result["blob"], "bytes": len(raw), "vpcrs": vpcrs, "state_digest": header.state_digest.hex()}
        simulated = result.get("simulated_vm")  # a simulated VM's boot logs (vroot.agent._migrate)
        if isinstance(simulated, Mapping) and all(isinstance(v, str) for v in simulated.values()):
            kept["simulated_vm"] = dict(simulated)
        return kept

    def proof(m: Migration, result: Mapping[str, Any]) -> Mapping[str, Any]:
        destination = store.agents.get(m.destination)
        if destination.vtm_manager_public is None:
            raise VerificationError(f"{m.destination} has no enrolled vTM-manager key")
        vek_name = result.get("vek_name")
        if not isinstance(vek_name, str) or not hmac.compare_digest(vek_name, str(m.ticket.get("vek_name"))):
            raise VerificationError(f"the imported vTM's vEK is {vek_name!r}, not the one enrolled for VM {m.vm_uuid}")
        der = _bytes(result, "vek_certificate")
        verify_vek_certificate(der, manager_public=parse_public(destination.vtm_manager_public), now=clock(),
                               host_id=m.destination.removeprefix("host:"), vm_uuid=m.vm_uuid)  # fmt: skip
        vpcrs = result.get("vpcrs")
        live = vpcrs.get("sha256") if isinstance(vpcrs, Mapping) else None
        assert m.blob is not None
        if live != m.blob.get("vpcrs"):
            raise VerificationError("the imported vTM's vPCRs differ from those the source exported")
        return {"vek_certificate": result["vek_certificate"], "vpcrs": live,
                "timings": result.get("timings") if isinstance(result.get("timings"), Mapping) else {}}  # fmt: skip

    return Checks(target=target, blob=blob, proof=proof)
