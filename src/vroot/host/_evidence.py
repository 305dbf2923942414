"""The host evidence bundle of a deep quote (VMM-F5; DESIGN.md section 5), and its JSON form.

The host agent quotes host PCRs with qualifying data chosen by the caller (the RA server passes
the root of a Merkle tree over its waiting VMs' challenges) and returns, in one bundle, what a
verifier needs to judge the host *now*: the quote, the PCR values it covers, the boot, IMA and
vTM-launch logs, the AK and EK certificate, and the vTM-manager key with two certifications by
the AK (the long-lived one made at provisioning, and a fresh one over the same qualifying data).

Nothing here is verified: `UnverifiedHostEvidence` is what came over the wire.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, fields

from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg

__all__ = ["UnverifiedHostEvidence"]

_BYTES = (
    "qualifying_data",
    "quote_attest",
    "quote_signature",
    "ak_public",
    "ek_certificate",
    "boot_log",
    "ima_log",
    "launch_log",
    "manager_public",
    "manager_certify_attest",
    "manager_certify_signature",
    "manager_fresh_certify_attest",
    "manager_fresh_certify_signature",
)
MAX_FIELD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class UnverifiedHostEvidence:
    host_id: str
    qualifying_data: bytes
    quote_attest: bytes
    quote_signature: bytes
    pcrs: dict[HashAlg, dict[int, bytes]]
    ak_public: bytes
    ek_certificate: bytes
    boot_log: bytes
    ima_log: bytes
    launch_log: bytes
    manager_public: bytes
    manager_certify_attest: bytes
    manager_certify_signature: bytes
    manager_fresh_certify_attest: bytes
    manager_fresh_certify_signature: bytes

    def to_json(self) -> dict:
        doc: dict = {"host_id": self.host_id}
        for name in _BYTES:
            doc[name] = base64.b64encode(getattr(self, name)).decode()
        doc["pcrs"] = {
            alg.bank: {str(i): v.hex() for i, v in sorted(vals.items())} for alg, vals in self.pcrs.items()
        }
        return doc

    @classmethod
    def from_json(cls, doc: object) -> UnverifiedHostEvidence:
        """Decode the JSON form; `InvalidInput` naming the first bad field."""
        if not isinstance(doc, dict):
            raise InvalidInput("host evidence must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise InvalidInput(f"host evidence: unknown fields {sorted(unknown)}")
        values: dict = {}
        if not isinstance(doc.get("host_id"), str):
            raise InvalidInput("host evidence: host_id must be a string")
        values["host_id"] = doc["host_id"]
        for name in _BYTES:
            raw = doc.get(name)
            if not isinstance(raw, str) or len(raw) > MAX_FIELD:
                raise InvalidInput(f"host evidence: {name} must be base64 text")
            try:
                values[name] = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"host evidence: {name} is not valid base64") from None
        pcrs = doc.get("pcrs")
        if not isinstance(pcrs, dict):
            raise InvalidInput("host evidence: pcrs must be an object")
        try:
            values["pcrs"] = {
                HashAlg.from_bank(bank): {int(i): bytes.fromhex(v) for i, v in vals.items()}
                for bank, vals in pcrs.items()
            }
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInput(f"host evidence: pcrs: {exc}") from None
        return cls(**values)
