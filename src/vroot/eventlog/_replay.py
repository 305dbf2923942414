"""Replay a TCG log to PCR values, and prove a log against claimed (quoted) PCR values.

Replay rules (DESIGN.md section 2, all seen in real logs under ../shared/corpora):

- every PCR starts at its reset value: zero, all ones for PCR 17-22; unlogged PCRs keep it;
- EV_NO_ACTION events are never extended;
- a StartupLocality EV_NO_ACTION event in PCR 0 (data "StartupLocality\\0" + one byte) sets
  PCR 0's start value to 00..00LL (the locality in the last byte), if PCR 0 is still unextended;
- an EV_EFI_HCRTM_EVENT as the first extend of PCR 0 starts PCR 0 at 00..04 (an H-CRTM runs at
  locality 4, TPM 2.0 Library Part 1 section 34.3) and then extends its digest, as tpm2_eventlog;
- every other event extends `pcr = H(pcr || digest)` in each bank it has a digest for; a SHA-1
  legacy log replays the SHA-1 bank.

A bank is replayed only if every extending event carries a digest for it; others are listed in
`ReplayedPcrs.incomplete` (tpm2-tools' `event-uefiaction.bin` declares four banks but logs two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vroot.errors import EventLogError, InvalidInput, ReplayMismatch
from vroot.eventlog._event_types import EventType
from vroot.eventlog._pcrs import NUM_PCRS, ReplayedPcrs, hasher, reset_value
from vroot.eventlog._record import Record
from vroot.eventlog._tcg import TcgEvent, UnverifiedTcgLog
from vroot.tpm2 import HashAlg

_NO_ACTION = EventType.EV_NO_ACTION
_HCRTM = EventType.EV_EFI_HCRTM_EVENT
_LOCALITY_SIGNATURE = b"StartupLocality\x00"
MAX_REPLAY_PCR = 31


class ReplayedLog(Record):
    """A log proven against claimed PCR values.

    Proves: `events` (the events of the verified PCRs) hash-chain, in the banks of `pcrs`, to the
    values in `pcrs`, which equal the claimed ones. `workarounds` names the firmware-bug
    workarounds (see `WORKAROUNDS`) needed for that; `log` is then the patched copy.
    Does not prove: that the claimed values came from a TPM; pass only values from a verified quote.
    Caller must: trust only digests of the banks in `pcrs`, and check event data that its digest
    does not cover (most EFI event data is not what is hashed).
    """

    __slots__ = ("log", "pcrs", "events", "workarounds")


def replay_tcg_log(log: UnverifiedTcgLog) -> ReplayedPcrs:
    """PCRs 0-23 of every bank the log carries, computed from its events (see module docstring).

    PCRs above 23 appear only when an event extends them.
    """
    banks: list[tuple[HashAlg, object]] = []
    incomplete: list[HashAlg | int] = []
    for alg in log.algorithms:
        new = hasher(alg) if isinstance(alg, HashAlg) else None
        if new is None:
            incomplete.append(alg)
        else:
            banks.append((alg, new))
    values = {alg: [reset_value(alg, i) for i in range(MAX_REPLAY_PCR + 1)] for alg, _ in banks}
    extended_high: set[int] = set()
    missing: set[HashAlg] = set()
    pcr0_extended = False
    for event in log.measurements:
        pcr = event.pcr
        if event.event_type == _NO_ACTION:
            data = event.data
            if pcr == 0 and not pcr0_extended and len(data) >= 17 and data[:16] == _LOCALITY_SIGNATURE:
                for alg, _ in banks:
                    values[alg][0] = bytes(alg.digest_size - 1) + data[16:17]
            continue
        if pcr == 0 and not pcr0_extended:
            pcr0_extended = True
            if event.event_type == _HCRTM:
                for alg, _ in banks:
                    values[alg][0] = bytes(alg.digest_size - 1) + b"\x04"
        elif pcr >= NUM_PCRS:
            if pcr > MAX_REPLAY_PCR:  # only hand-made events: the parser and builder refuse these
                raise EventLogError(f"event {event.index}: PCR index {pcr} out of range", offset=event.offset)
            extended_high.add(pcr)
        digests = event.digests
        for alg, new in banks:
            digest = digests.get(alg)
            if digest is None:
                missing.add(alg)
                continue
            bank = values[alg]
            bank[pcr] = new(bank[pcr] + digest).digest()
    shown = list(range(NUM_PCRS)) + sorted(extended_high)
    result = {alg: {i: values[alg][i] for i in shown} for alg, _ in banks if alg not in missing}
    incomplete.extend(alg for alg, _ in banks if alg in missing)
    return ReplayedPcrs(result, incomplete=tuple(incomplete))


def _mismatches(
    replayed: ReplayedPcrs, claimed: Mapping[HashAlg, Mapping[int, bytes]], check: Mapping[HashAlg, list[int]]
) -> list[tuple[HashAlg, list[int], str]]:
    found = []
    for alg, indices in check.items():
        if alg not in replayed:
            found.append((alg, indices, f"{alg.bank}: the log carries no complete {alg.bank} bank"))
            continue
        bank = replayed[alg]
        bad = [i for i in indices if bank.get(i) != claimed[alg][i]]
        if bad:
            detail = "; ".join(
                f"PCR {i} replays to {bank[i].hex() if i in bank else 'nothing'}, claimed {claimed[alg][i].hex()}"
                for i in bad
            )
            found.append((alg, bad, f"{alg.bank}: {detail}"))
    return found


def verify_replay(
    log: UnverifiedTcgLog,
    *,
    claimed: Mapping[HashAlg, Mapping[int, bytes]],
    pcrs: Iterable[int] | None = None,
) -> ReplayedLog:
    """Prove that `log` replays to `claimed` (bank -> PCR -> value) on the PCRs `pcrs` (default:
    every claimed PCR). Raises `ReplayMismatch` naming the first differing bank and all its
    differing PCRs (the message lists every bank). A claimed bank the log does not carry is a
    mismatch: the log cannot prove it.

    A plain replay is tried first. Only if it fails, each workaround of `WORKAROUNDS` whose PCRs
    are among the failing ones is tried on a copy; a success says which one was used.
    """
    from vroot.eventlog._workarounds import WORKAROUNDS

    wanted = None if pcrs is None else {int(i) for i in pcrs}
    claimed = {
        HashAlg.from_bank(alg) if isinstance(alg, str) else HashAlg(alg): {
            int(i): bytes(v) for i, v in values.items()
        }
        for alg, values in claimed.items()
    }
    check: dict[HashAlg, list[int]] = {}
    for alg, values in claimed.items():
        indices = sorted(i for i in values if wanted is None or i in wanted)
        if indices:
            check[alg] = indices
    if not check:
        raise InvalidInput("verify_replay: no claimed PCR values to verify")
    plain = replay_tcg_log(log)
    failures = _mismatches(plain, claimed, check)
    if not failures:
        return _proven(log, plain, check, ())
    failing = {i for _, indices, _ in failures for i in indices}
    for workaround in WORKAROUNDS:
        if not failing & workaround.pcrs:
            continue
        patched = workaround.apply(log)
        if patched is None:
            continue
        replayed = replay_tcg_log(patched)
        if not _mismatches(replayed, claimed, check):
            return _proven(patched, replayed, check, (workaround.id,))
    alg, indices, _ = failures[0]
    message = "log does not replay to the claimed PCRs: " + " | ".join(text for _, _, text in failures)
    raise ReplayMismatch(message, bank=alg.bank, pcrs=indices)


def _proven(
    log: UnverifiedTcgLog,
    replayed: ReplayedPcrs,
    check: Mapping[HashAlg, list[int]],
    workarounds: tuple[str, ...],
) -> ReplayedLog:
    verified = ReplayedPcrs({alg: {i: replayed[alg][i] for i in indices} for alg, indices in check.items()})
    covered = {i for indices in check.values() for i in indices}
    events: tuple[TcgEvent, ...] = tuple(
        e for e in log.measurements if e.pcr in covered and e.event_type != _NO_ACTION
    )
    return ReplayedLog(log=log, pcrs=verified, events=events, workarounds=workarounds)
