"""A VM's own evidence (RA-3): its vTM quote with the vAK, and the guest's TCG and IMA logs.

    evidence = UnverifiedVmEvidence.from_json(doc)        # InvalidInput naming the first bad field
    verified = verify_vm_evidence(evidence, vak=enrolled_vak, nonce=nonce)
    full = vm_appraisal_input(verified, time=issued_at)   # for `vroot.baseline.appraise`

The JSON form, as the guest attester posts it ({"evidence": ...} of an `attest` task):

    {"quote_attest": b64 TPMS_ATTEST, "quote_signature": b64 TPMT_SIGNATURE,
     "pcrs": {"sha256": {"0": hex, ...}}, "boot_log": b64 TCG log, "ima_log": b64 IMA list or ""}

The same checks as a host's evidence, less what only a host has (vTM launches, the vTM-manager
key): `verify_host_evidence`'s rules for IMA lists that grew after the quote and for naming the
PCRs that do not replay are reused from `vroot.attestation.host` (this module belongs beside it).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from vroot.attestation import DEFAULT_ALLOWED_HASHES, VerifiedQuote, verify_quote
from vroot.attestation.host import _covered_ima, _explain_replay
from vroot.baseline import AppraisalInput
from vroot.errors import AttestTypeInvalid, InvalidInput, PcrDigestMismatch, ReplayMismatch
from vroot.eventlog import (
    EventType,
    UnverifiedImaLog,
    UnverifiedTcgLog,
    parse_ima_log,
    parse_tcg_log,
    replay_tcg_log,
)
from vroot.tpm2 import HashAlg, PublicArea, QuoteInfo, parse_attest

__all__ = ["UnverifiedVmEvidence", "VerifiedVmEvidence", "claimed_nonce", "verify_vm_evidence", "vm_appraisal_input"]

IMA_PCR = 10
MAX_FIELD = 64 * 1024 * 1024
MAX_PCRS = 24 * 8
_BYTES = ("quote_attest", "quote_signature", "boot_log", "ima_log")
_NO_ACTION = int(EventType.EV_NO_ACTION)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnverifiedVmEvidence:
    """What the guest attester sent. Nothing here is verified; `pcrs` are the values it claims."""

    quote_attest: bytes
    quote_signature: bytes
    pcrs: dict[HashAlg, dict[int, bytes]]
    boot_log: bytes
    ima_log: bytes

    def to_json(self) -> dict:
        doc: dict = {name: base64.b64encode(getattr(self, name)).decode() for name in _BYTES}
        doc["pcrs"] = {alg.bank: {str(i): v.hex() for i, v in sorted(vals.items())} for alg, vals in self.pcrs.items()}
        return doc

    @classmethod
    def from_json(cls, doc: object) -> UnverifiedVmEvidence:
        """Decode the JSON form; `InvalidInput` naming the first bad field."""
        if not isinstance(doc, Mapping):
            raise InvalidInput("VM evidence must be a JSON object")
        if set(doc) != {*_BYTES, "pcrs"}:
            raise InvalidInput(f"VM evidence has the fields {sorted({*_BYTES, 'pcrs'})}, got {sorted(map(str, doc))}")
        values: dict = {}
        for name in _BYTES:
            raw = doc[name]
            if not isinstance(raw, str) or len(raw) > MAX_FIELD:
                raise InvalidInput(f"VM evidence: {name} must be base64 text")
            try:
                values[name] = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"VM evidence: {name} is not valid base64") from None
        pcrs = doc["pcrs"]
        if not isinstance(pcrs, Mapping) or sum(len(v) if isinstance(v, Mapping) else 1 for v in pcrs.values()) > MAX_PCRS:
            raise InvalidInput(f"VM evidence: pcrs must be an object of at most {MAX_PCRS} values")
        try:
            values["pcrs"] = {
                HashAlg.from_bank(str(bank)): {int(i): bytes.fromhex(v) for i, v in vals.items()}
                for bank, vals in pcrs.items()
            }
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInput(f"VM evidence: pcrs: {exc}") from None
        return cls(**values)


def claimed_nonce(evidence: UnverifiedVmEvidence) -> bytes:
    """The nonce the quote says it answers (its extraData), unverified: to find the challenge it claims."""
    return parse_attest(evidence.quote_attest).extra_data


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedVmEvidence:
    """A VM's evidence whose checks all passed.

    Proves: the vAK `vak` signed, over `nonce`, the vPCR values `pcrs`; the guest's TCG log and IMA
    list replay to exactly those values (so their events are what the vTM measured).
    Does not prove: that the vAK is in a vTM of a trusted host (the PCA's enrollment, and the host's
    deep quote: `verify_vm_binding`), nor that the measured state is a good one (appraise it).
    """

    quote: VerifiedQuote
    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    boot_log: UnverifiedTcgLog
    ima_log: UnverifiedImaLog | None
    quote_attest: bytes


def verify_vm_evidence(
    evidence: UnverifiedVmEvidence,
    *,
    vak: PublicArea,
    nonce: bytes,
    allowed_hashes: frozenset[HashAlg] = DEFAULT_ALLOWED_HASHES,
) -> VerifiedVmEvidence:
    """Verify a VM's evidence with its ENROLLED vAK (RA-3). Fails closed at the first failed check:
    a `QuoteError` subclass for the quote (signature, magic, type, nonce, PCR digest),
    `ReplayMismatch` naming the vPCRs whose log does not replay to the quoted value, `EventLogError`
    for a log that does not decode, `InvalidInput` for bytes that are not TPM structures.
    Caller must: consume `nonce` (single use) and check the vAK's certificate first."""
    attest = parse_attest(evidence.quote_attest)
    if not isinstance(attest.attested, QuoteInfo):
        raise AttestTypeInvalid("VM evidence: the quote is not a TPM2_Quote")
    banks = tuple(alg for alg, indices in attest.attested.pcr_select.banks if indices)
    boot_log = parse_tcg_log(evidence.boot_log, source="guest boot log")
    boot = replay_tcg_log(boot_log)
    ima_log: UnverifiedImaLog | None = None
    ima: Mapping[HashAlg, Mapping[int, bytes]] = {}
    if evidence.ima_log:
        ima_log, ima = _covered_ima(parse_ima_log(evidence.ima_log, source="guest IMA log"), banks, evidence.pcrs)
    claimed: dict[HashAlg, dict[int, bytes]] = {}
    for alg in banks:
        if alg not in boot:
            raise ReplayMismatch(f"VM evidence: no {alg.bank} bank in the guest boot log", bank=alg.bank, pcrs=())
        values = dict(boot[alg])
        if alg in ima:
            values[IMA_PCR] = ima[alg][IMA_PCR]
        claimed[alg] = values
    try:
        quote = verify_quote(attest, evidence.quote_signature, vak, nonce=nonce, pcrs=claimed,
                             allowed_hashes=allowed_hashes)  # fmt: skip
    except PcrDigestMismatch:
        _explain_replay(attest, evidence, vak, nonce, claimed, allowed_hashes)
        raise
    return VerifiedVmEvidence(quote=quote, pcrs=quote.pcrs, boot_log=boot_log, ima_log=ima_log,
                              quote_attest=evidence.quote_attest)  # fmt: skip


def vm_appraisal_input(verified: VerifiedVmEvidence, *, time: datetime) -> AppraisalInput:
    """The appraisal input of verified VM evidence: its quoted vPCRs, the guest boot log's events of
    quoted vPCRs, and the IMA list (None when the guest sent none)."""
    quoted = {i for values in verified.pcrs.values() for i in values}
    events = tuple(e for e in verified.boot_log.measurements if e.pcr in quoted and int(e.event_type) != _NO_ACTION)
    entries = None if verified.ima_log is None else verified.ima_log.entries
    return AppraisalInput(pcrs=verified.pcrs, events=events, ima_entries=entries, time=time)
