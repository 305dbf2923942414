"""Host evidence of a deep quote (VMM-F5, RA-4; DESIGN.md section 5): its JSON form and its verification.

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
from collections.abc import Mapping
from dataclasses import dataclass, fields

from vroot.attestation._checks import DEFAULT_ALLOWED_HASHES
from vroot.attestation.certify import verify_certify
from vroot.attestation.quote import VerifiedQuote, verify_quote
from vroot.errors import (
    AttestTypeInvalid,
    EventLogError,
    InvalidInput,
    PcrDigestMismatch,
    QuoteError,
    ReplayMismatch,
)
from vroot.eventlog import (
    EventType,
    UnverifiedImaLog,
    UnverifiedTcgLog,
    parse_ima_log,
    parse_tcg_log,
    replay_ima_log,
    replay_tcg_log,
)
from vroot.measure._launch import LAUNCH_PCR, VtmLaunch, parse_launch_event_data
from vroot.tpm2 import HashAlg, PublicArea, QuoteInfo, parse_attest, parse_public

__all__ = ["UnverifiedHostEvidence", "VerifiedHostEvidence", "verify_host_evidence"]

IMA_PCR = 10

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


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedHostEvidence:
    """Host evidence whose cryptographic checks all passed.

    Proves: the AK `ak` signed, over the caller's qualifying data, the PCR values `pcrs`; the boot
    log, the IMA log and the vTM-launch log replay to exactly those values (so their events are what
    the TM measured); the same AK certified, over the same qualifying data, that the key `manager`
    (the vTM-manager key) is loaded in its TM now; `launches` are the vTMs launched since the host
    TM started.
    Does not prove: that the AK belongs to a genuine TM (the PCA's enrollment does: AK certificate,
    credential activation), that the measured state is a good one (appraise the logs against a
    baseline), or that `manager` signs only in a trusted state (check its policy).
    """

    host_id: str
    quote: VerifiedQuote
    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    boot_log: UnverifiedTcgLog
    ima_log: UnverifiedImaLog  # the entries the quote covers (later ones are not evidence yet)
    launches: tuple[VtmLaunch, ...]
    ak: PublicArea
    manager: PublicArea


def verify_host_evidence(
    evidence: UnverifiedHostEvidence,
    *,
    qualifying_data: bytes,
    ak: PublicArea | None = None,
    allowed_hashes: frozenset[HashAlg] = DEFAULT_ALLOWED_HASHES,
) -> VerifiedHostEvidence:
    """Verify a deep quote's host evidence (RA-4). Fails closed at the first failed check.

    `ak` is the enrolled AK when the caller has one (it must be used instead of the bundle's);
    without it the bundle's AK is used, and the result proves only as much as that AK is trusted.
    Raises a `QuoteError` subclass for the quote or the certification, `ReplayMismatch` naming the
    PCRs whose log does not replay to the quoted value, `EventLogError` for a log that does not
    decode, `InvalidInput` for bytes that are not TPM structures.
    """
    ak = ak if ak is not None else parse_public(evidence.ak_public)
    attest = parse_attest(evidence.quote_attest)
    if not isinstance(attest.attested, QuoteInfo):
        raise AttestTypeInvalid("host evidence: the quote is not a TPM2_Quote")
    selection = attest.attested.pcr_select
    banks = tuple(alg for alg, _ in selection.to_mapping().items())
    boot_log = parse_tcg_log(evidence.boot_log, source="host boot log")
    ima_log = parse_ima_log(evidence.ima_log, source="host IMA log")
    launch_log = parse_tcg_log(evidence.launch_log, source="host vTM launch log")
    boot = replay_tcg_log(boot_log)
    ima_log, ima = _covered_ima(ima_log, banks, evidence.pcrs)
    launched = replay_tcg_log(launch_log)
    claimed: dict[HashAlg, dict[int, bytes]] = {}
    for alg in banks:
        if alg not in boot or alg not in launched:
            raise ReplayMismatch(f"host evidence: no {alg.bank} bank in the logs", bank=alg.bank, pcrs=())
        values = dict(boot[alg])
        values.update(ima[alg])
        values[LAUNCH_PCR] = launched[alg][LAUNCH_PCR]
        claimed[alg] = values
    try:
        quote = verify_quote(attest, evidence.quote_signature, ak, nonce=qualifying_data, pcrs=claimed,
                             allowed_hashes=allowed_hashes)  # fmt: skip
    except PcrDigestMismatch:
        _explain_replay(attest, evidence, ak, qualifying_data, claimed, allowed_hashes)
        raise
    launches = tuple(_launches(launch_log))
    manager = parse_public(evidence.manager_public)
    verify_certify(evidence.manager_fresh_certify_attest, evidence.manager_fresh_certify_signature, ak,
                   qualifying_data=qualifying_data, certified_name=manager.name(),
                   allowed_hashes=allowed_hashes)  # fmt: skip
    return VerifiedHostEvidence(
        host_id=evidence.host_id,
        quote=quote,
        pcrs=quote.pcrs,
        boot_log=boot_log,
        ima_log=ima_log,
        launches=launches,
        ak=ak,
        manager=manager,
    )


def _covered_ima(
    log: UnverifiedImaLog, banks: tuple[HashAlg, ...], claimed: Mapping[HashAlg, Mapping[int, bytes]]
):  # noqa: ANN202
    """The prefix of the IMA list that the quote covers, and its replay.

    A real kernel keeps appending to the list: read after the quote, it may hold entries the quote
    does not cover yet. The prefix is chosen by the agent's claimed PCR 10 values (unverified
    here); the quote check then proves the prefix's replay is what the TM signed. Entries after it
    are not evidence yet (the next attestation covers them). With no matching prefix the whole list
    is returned and the quote check fails, naming PCR 10.
    """
    full = replay_ima_log(log, banks=banks)
    wanted = {alg: claimed.get(alg, {}).get(IMA_PCR) for alg in banks}
    if None in wanted.values() or all(full[alg].get(IMA_PCR) == wanted[alg] for alg in banks):
        return log, full
    state = {alg: {IMA_PCR: bytes(alg.digest_size)} for alg in banks}
    for count in range(len(log.entries) + 1):
        if all(state[alg][IMA_PCR] == wanted[alg] for alg in banks):
            prefix = log.replace(entries=log.entries[:count])
            return prefix, replay_ima_log(prefix, banks=banks)
        if count < len(log.entries):
            step = log.replace(entries=log.entries[count : count + 1])
            state = {alg: dict(v) for alg, v in replay_ima_log(step, banks=banks, start=state).items()}
    return log, full


def _explain_replay(attest, evidence, ak, qualifying_data, claimed, allowed_hashes) -> None:  # noqa: ANN001
    """After a PCR digest mismatch: if the agent's own PCR values are the signed ones, name the PCRs
    whose log does not replay to them (ReplayMismatch); otherwise let the mismatch stand."""
    try:
        signed = verify_quote(attest, evidence.quote_signature, ak, nonce=qualifying_data, pcrs=evidence.pcrs,
                              allowed_hashes=allowed_hashes).pcrs  # fmt: skip
    except (QuoteError, InvalidInput):
        return
    for alg, values in signed.items():
        differ = [i for i, v in sorted(values.items()) if claimed.get(alg, {}).get(i) != v]
        if differ:
            raise ReplayMismatch(
                f"host evidence: the logs do not replay to quoted {alg.bank} PCRs {', '.join(map(str, differ))}",
                bank=alg.bank,
                pcrs=differ,
            )


def _launches(log: UnverifiedTcgLog):  # noqa: ANN202
    for event in log.events:
        if int(event.event_type) == EventType.EV_NO_ACTION:
            continue
        if event.pcr != LAUNCH_PCR or int(event.event_type) != EventType.EV_EVENT_TAG:
            raise EventLogError(
                f"event {event.index} of the vTM launch log is not a launch", offset=event.offset
            )
        yield parse_launch_event_data(event.data)
