"""Incremental IMA appraisal: judge only the entries added since the last attestation.

`ImaAppraisalState` is what the RA server keeps per boot of an attester (as JSON, `to_json()`):
how many entries were appraised, the PCR values they replay to per bank, and the findings so far
(so a file that was bad once keeps the verdict untrusted until the next boot). `appraise_ima_delta`
takes a state and the entries that follow it and returns the next state and the new findings.

Each entry is judged in this order (the finding IDs are in the package docstring):

1. a violation (all-zero template hash): `ima.violation`, nothing else;
2. an entry whose template vroot cannot decode (no path or digest): `ima.entry.undecodable`;
3. `boot_aggregate`: the hash of the verified PCRs it covers (0-7, or 0-9 for banks other than
   SHA-1) is accepted; when all those PCRs are verified anything else is
   `ima.boot_aggregate.mismatch`, otherwise the entry goes on like any other path;
4. a path that an exclude matches is not appraised;
5. a signature, when the policy has keys or requires signatures: valid by an accepted key makes
   the entry acceptable; otherwise `ima.signature.invalid`, `ima.signature.unknown_key` or,
   when signatures are required, `ima.signature.missing`;
6. the allowlist: `ima.file.digest_mismatch` for a known path with another digest,
   `ima.file.unknown` for a path not in it (when the policy requires the allowlist).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType

from vroot.baseline._excludes import MAX_EXCLUDED_PATH
from vroot.baseline._findings import Finding
from vroot.baseline._imasig import ImaKeyUnknown, ImaSignatureInvalid, verify_ima_signature
from vroot.baseline._model import Baseline
from vroot.baseline._policy import Policy
from vroot.errors import InvalidInput, ReplayMismatch
from vroot.eventlog import ImaEntry, UnverifiedImaLog, replay_ima_log
from vroot.tpm2 import HashAlg

__all__ = ["IMA_PCR", "ImaAppraisalState", "appraise_ima_delta"]

IMA_PCR = 10
BOOT_AGGREGATE = "boot_aggregate"
MAX_KEPT_ERRORS = 500
MAX_KEPT_OTHERS = 500
MAX_ENTRIES_SEEN = 2**53
_SHOWN_DIGESTS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ImaAppraisalState:
    """Where incremental IMA appraisal stands after `entries_seen` entries of one boot.

    `pcrs`: bank -> PCR -> value the entries replay to (the banks chosen at the start; a PCR no
    entry extended is absent and means zero). `findings`: at most 500 errors and 500 others, in
    entry order; `dropped` counts the findings left out beyond that.
    Caller must: start from `ImaAppraisalState.initial()` after the attester reboots (its IMA list
    starts again), and send the entries from index `entries_seen` on.
    """

    entries_seen: int = 0
    pcrs: Mapping[HashAlg, Mapping[int, bytes]] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    dropped: int = 0

    def __post_init__(self) -> None:
        for name in ("entries_seen", "dropped"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_ENTRIES_SEEN:
                raise InvalidInput(f"IMA state {name} must be a non-negative integer")
        if not isinstance(self.pcrs, Mapping):
            raise InvalidInput("IMA state pcrs must map banks to PCR values")
        banks: dict[HashAlg, Mapping[int, bytes]] = {}
        for alg, values in self.pcrs.items():
            if not isinstance(alg, HashAlg) or not isinstance(values, Mapping):
                raise InvalidInput("IMA state pcrs must map a HashAlg to {PCR: value}")
            for index, value in values.items():
                if type(index) is not int or not 0 <= index <= 31:
                    raise InvalidInput(f"IMA state: PCR {index!r} is not 0-31")
                if not isinstance(value, bytes) or len(value) != alg.digest_size:
                    raise InvalidInput(f"IMA state: a {alg.bank} PCR value is {alg.digest_size} bytes")
            banks[alg] = MappingProxyType(dict(sorted(values.items())))
        object.__setattr__(self, "pcrs", MappingProxyType(dict(sorted(banks.items()))))
        findings = tuple(self.findings)
        if not all(isinstance(f, Finding) for f in findings):
            raise InvalidInput("IMA state findings must be Findings")
        errors = sum(f.severity == "error" for f in findings)
        if errors > MAX_KEPT_ERRORS or len(findings) - errors > MAX_KEPT_OTHERS:
            raise InvalidInput("IMA state keeps at most 500 error and 500 other findings")
        object.__setattr__(self, "findings", findings)

    @classmethod
    def initial(cls, *, banks: Iterable[HashAlg] = (HashAlg.SHA1, HashAlg.SHA256)) -> ImaAppraisalState:
        """The state before the first entry of a boot, replaying `banks`."""
        return cls(pcrs={HashAlg(alg): {} for alg in banks})

    def to_json(self) -> dict[str, object]:
        return {
            "entries_seen": self.entries_seen,
            "pcrs": {alg.bank: {str(i): v.hex() for i, v in vals.items()} for alg, vals in self.pcrs.items()},
            "findings": [f.to_json() for f in self.findings],
            "dropped": self.dropped,
        }

    @classmethod
    def from_json(cls, doc: object) -> ImaAppraisalState:
        """Decode `to_json()` output (a dict, or its JSON text); `InvalidInput` for anything else."""
        if isinstance(doc, str | bytes):
            try:
                doc = json.loads(doc)
            except (ValueError, RecursionError):
                raise InvalidInput("IMA state: not JSON") from None
        keys = {"entries_seen", "pcrs", "findings", "dropped"}
        if not isinstance(doc, dict) or set(doc) != keys:
            raise InvalidInput(f"IMA state is a JSON object with exactly the fields {sorted(keys)}")
        pcrs, findings = doc["pcrs"], doc["findings"]
        if not isinstance(pcrs, dict) or not isinstance(findings, list):
            raise InvalidInput("IMA state: pcrs must be an object and findings a list")
        banks: dict[HashAlg, dict[int, bytes]] = {}
        for bank, values in pcrs.items():
            if not isinstance(bank, str) or not isinstance(values, dict):
                raise InvalidInput("IMA state: each bank maps PCR indices to hex values")
            alg = HashAlg.from_bank(bank)
            banks[alg] = {}
            for index, value in values.items():
                if not (isinstance(index, str) and index.isdigit() and len(index) <= 2 and isinstance(value, str)):
                    raise InvalidInput("IMA state: PCR values are {\"index\": \"hex\"}")
                try:
                    banks[alg][int(index)] = bytes.fromhex(value)
                except ValueError:
                    raise InvalidInput(f"IMA state: {alg.bank} PCR {index} is not hex") from None
        return cls(entries_seen=doc["entries_seen"], pcrs=banks,
                   findings=tuple(Finding.from_json(f) for f in findings), dropped=doc["dropped"])  # fmt: skip

    def summary_findings(self) -> tuple[Finding, ...]:
        """The kept findings, and `ima.findings.truncated` when some were dropped."""
        if not self.dropped:
            return self.findings
        note = Finding(id="ima.findings.truncated", severity="info", seen=str(self.dropped),
                       message=f"{self.dropped} more IMA findings of this boot are not listed")  # fmt: skip
        return (*self.findings, note)

    def _add(self, new: Sequence[Finding]) -> tuple[tuple[Finding, ...], int]:
        kept = list(self.findings)
        errors = sum(f.severity == "error" for f in kept)
        others = len(kept) - errors
        dropped = self.dropped
        for finding in new:
            if finding.severity == "error" and errors < MAX_KEPT_ERRORS:
                errors += 1
            elif finding.severity != "error" and others < MAX_KEPT_OTHERS:
                others += 1
            else:
                dropped += 1
                continue
            kept.append(finding)
        return tuple(kept), dropped


def appraise_ima_delta(
    state: ImaAppraisalState,
    new_entries: Sequence[ImaEntry],
    *,
    baseline: Baseline,
    policy: Policy,
    quoted: Mapping[HashAlg, Mapping[int, bytes]] | None = None,
    boot_pcrs: Mapping[HashAlg, Mapping[int, bytes]] | None = None,
) -> tuple[ImaAppraisalState, tuple[Finding, ...]]:
    """Appraise `new_entries` (the entries after `state.entries_seen`) under `policy.ima`.

    With `quoted` (verified PCR values), the entries are first proven: replayed from `state`,
    the prefix whose replay equals the quoted IMA PCRs (in every replayed bank the quote has) is
    appraised, and entries after it (read after the quote was made) are left for the next
    call (`new_state.entries_seen` says how far it got). Raises `ReplayMismatch` when no prefix
    replays to the quote. Without `quoted` the caller must have proven the entries itself.
    `boot_pcrs` (verified PCRs 0-9) lets `boot_aggregate` be checked against them.

    Returns the new state and the findings of the appraised entries only; the state holds all.
    """
    return ima_delta(state, new_entries, baseline=baseline, policy=policy, quoted=quoted, boot_pcrs=boot_pcrs)


def ima_delta(
    state: ImaAppraisalState,
    new_entries: Sequence[ImaEntry],
    *,
    baseline: Baseline,
    policy: Policy,
    quoted: Mapping[HashAlg, Mapping[int, bytes]] | None,
    boot_pcrs: Mapping[HashAlg, Mapping[int, bytes]] | None,
    log: UnverifiedImaLog | None = None,
) -> tuple[ImaAppraisalState, tuple[Finding, ...]]:
    """`appraise_ima_delta`, for `appraise`: `log`, when its entries are `new_entries` (the same
    tuple), is the log verification replayed, whose replays from zero `replay_ima_log` keeps, so
    proving the entries against `quoted` does not hash them again."""
    ima = policy.ima
    if ima is None:
        raise InvalidInput(f"policy {policy.group} does not appraise IMA")
    entries = tuple(new_entries)
    if not all(map(isinstance, entries, repeat(ImaEntry))):
        raise InvalidInput("IMA entries must be ImaEntry values")
    if log is not None and log.entries is not entries:
        log = None
    banks = tuple(state.pcrs) or (HashAlg.SHA1, HashAlg.SHA256)
    if quoted is None:
        proven = len(entries)
        pcrs = _replay(entries, banks, state.pcrs, log)
    else:
        proven, pcrs = _proven_prefix(entries, banks, state.pcrs, quoted, log)
    findings = _appraise_entries(entries[:proven], state.entries_seen, baseline, policy, boot_pcrs or {})
    kept, dropped = state._add(findings)
    new_state = ImaAppraisalState(entries_seen=state.entries_seen + proven, pcrs=pcrs, findings=kept,
                                  dropped=dropped)  # fmt: skip
    return new_state, tuple(findings)


def _replay(
    entries: Sequence[ImaEntry], banks: tuple[HashAlg, ...], start: Mapping, log: UnverifiedImaLog | None = None
) -> Mapping:
    if not entries:
        return start
    if log is None:
        log = UnverifiedImaLog(entries=tuple(entries), format="binary")
    replayed = replay_ima_log(log, banks=banks, start=start)
    return {alg: replayed[alg] for alg in replayed}


def _proven_prefix(entries, banks, start, quoted, log) -> tuple[int, Mapping]:  # noqa: ANN001
    """(number of entries proven, their replayed PCRs); ReplayMismatch when no prefix matches."""
    pcrs_of = {IMA_PCR, *{e.pcr for e in entries}}
    for values in start.values():
        pcrs_of.update(values)
    compared = [(alg, quoted[alg]) for alg in banks if alg in quoted and all(p in quoted[alg] for p in pcrs_of)]
    if not compared:
        raise ReplayMismatch(f"IMA PCRs {sorted(pcrs_of)} are not quoted in a replayed bank "
                             f"({', '.join(a.bank for a in banks)})", bank=banks[0].bank, pcrs=pcrs_of)  # fmt: skip

    def matches(values: Mapping) -> bool:
        return all(values.get(alg, {}).get(p, bytes(alg.digest_size)) == bank[p] for alg, bank in compared for p in pcrs_of)

    full = _replay(entries, banks, start, log)
    if matches(full):
        return len(entries), full
    current = start
    if matches(current):
        return 0, current
    for count, entry in enumerate(entries, 1):
        current = _replay((entry,), banks, current)
        if matches(current):
            return count, current
    alg, bank = compared[0]
    differ = sorted(p for p in pcrs_of if full.get(alg, {}).get(p, bytes(alg.digest_size)) != bank[p])
    raise ReplayMismatch(
        f"no prefix of {len(entries)} new IMA entries replays to the quoted {alg.bank} PCR "
        f"{', '.join(map(str, differ))}",
        bank=alg.bank,
        pcrs=differ,
    )


def _show(text: str) -> str:
    return repr(text[:200] + ("…" if len(text) > 200 else ""))


def _boot_aggregates(alg: HashAlg | None, boot_pcrs: Mapping) -> tuple[frozenset[bytes], bool]:
    """(the boot_aggregate values the verified PCRs allow in `alg`, whether every allowed form
    could be computed). SHA-1 covers PCRs 0-7; other banks 0-9 (Linux 5.8 on) or 0-7 (before)."""
    bank = boot_pcrs.get(alg) if alg is not None else None
    if bank is None:
        return frozenset(), False
    ranges = [range(8)] if alg is HashAlg.SHA1 else [range(8), range(10)]
    known = [r for r in ranges if all(i in bank for i in r)]
    values = frozenset(alg.digest(b"".join(bank[i] for i in r)) for r in known)
    return values, len(known) == len(ranges)


def _appraise_entries(
    entries: Sequence[ImaEntry], first: int, baseline: Baseline, policy: Policy, boot_pcrs: Mapping
) -> list[Finding]:
    ima = policy.ima
    assert ima is not None
    reference = baseline.ima
    allowed = reference.digests if reference is not None else {}
    exclude = ima.exclude_pattern(reference.excludes if reference is not None else ())
    excluded = exclude.fullmatch if exclude is not None else None
    keys = ima.keys_by_id
    check_signatures = bool(keys) or ima.require_signatures
    strict = ima.require_allowlist or ima.require_signatures
    findings: list[Finding] = []
    add = findings.append
    for index, entry in enumerate(entries, first):
        if not any(entry.template_hash):
            add(Finding(id="ima.violation", severity="warning" if ima.tolerate_violations else "error", pcr=entry.pcr,
                        event_index=index, message=f"IMA violation (ToMToU or open writers) on {_show(entry.path or '')}"))  # fmt: skip
            continue
        path, digest = entry.path, entry.file_digest
        if path is None or digest is None:
            add(Finding(id="ima.entry.undecodable", severity="error" if strict else "warning", pcr=entry.pcr,
                        event_index=index, seen=entry.template_name[:100],
                        message=f"IMA entry of template {entry.template_name[:100]!r} has no path or file digest to appraise"))  # fmt: skip
            continue
        if path == BOOT_AGGREGATE:
            expected, complete = _boot_aggregates(entry.file_digest_hash_alg, boot_pcrs)
            if digest in expected:
                continue
            if complete:
                add(Finding(id="ima.boot_aggregate.mismatch", severity="error", pcr=entry.pcr, event_index=index,
                            expected=" or ".join(sorted(d.hex() for d in expected)), seen=_seen(entry),
                            message="IMA boot_aggregate is not the hash of the verified boot PCRs"))  # fmt: skip
                continue
        if not check_signatures:
            known = allowed.get(path)
            if known is not None and digest in known:
                continue  # allowed, so no finding whether or not an exclude matches: skip the pattern
        if excluded is not None and len(path) <= MAX_EXCLUDED_PATH and excluded(path):
            continue
        if check_signatures:
            if entry.signature:
                outcome = _signature(entry, index, keys, ima.require_signatures)
                if outcome is None:
                    continue  # validly signed by an accepted key
                add(outcome)
                if outcome.severity == "error":
                    continue
            elif ima.require_signatures:
                add(Finding(id="ima.signature.missing", severity="error", pcr=entry.pcr, event_index=index, seen=_seen(entry),
                            message=f"{_show(path)} carries no IMA signature, which the policy requires"))  # fmt: skip
                continue
        known = allowed.get(path)
        if known is None:
            if ima.require_allowlist:
                add(Finding(id="ima.file.unknown", severity="error", pcr=entry.pcr, event_index=index, seen=_seen(entry),
                            message=f"{_show(path)} is not in the IMA allowlist of baseline "
                                    f"{baseline.name} {baseline.version}"))  # fmt: skip
        elif digest not in known:
            shown = sorted(d.hex() for d in known)
            more = f" (+{len(shown) - _SHOWN_DIGESTS} more)" if len(shown) > _SHOWN_DIGESTS else ""
            add(Finding(id="ima.file.digest_mismatch", severity="error", pcr=entry.pcr, event_index=index, seen=_seen(entry),
                        expected=", ".join(shown[:_SHOWN_DIGESTS]) + more,
                        message=f"{_show(path)} has a digest baseline {baseline.name} {baseline.version} "
                                "does not allow"))  # fmt: skip
    return findings


def _seen(entry: ImaEntry) -> str:
    """How a finding shows the entry's file digest (made only for a finding)."""
    return f"{entry.digest_alg}:{entry.file_digest.hex()}"


def _signature(entry: ImaEntry, index: int, keys: Mapping, required: bool) -> Finding | None:
    """None for a valid signature by an accepted key, else the finding to report."""
    path = _show(entry.path or "")
    try:
        verify_ima_signature(entry.signature, file_digest=entry.file_digest or b"", digest_alg=entry.digest_alg,
                             keys=keys)  # fmt: skip
    except ImaKeyUnknown as exc:
        return Finding(id="ima.signature.unknown_key", severity="error" if required else "warning", pcr=entry.pcr,
                       event_index=index, seen=exc.key_id.hex(), message=f"{path}: {exc}")  # fmt: skip
    except ImaSignatureInvalid as exc:
        return Finding(id="ima.signature.invalid", severity="error", pcr=entry.pcr, event_index=index, seen=_seen(entry),
                       message=f"{path}: {exc}")  # fmt: skip
    return None
