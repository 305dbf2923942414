"""Replay an IMA list into PCR values (DESIGN.md section 2).

Each entry extends its PCR (10 unless the kernel was configured otherwise) in every bank:

- the bank of the logged template hash (SHA-1 in the standard lists) gets that hash;
- every other bank gets the bank's hash of the template data, as the kernel computes one
  template digest per allocated TPM bank (ima_calc_field_array_hash);
- a violation (all-zero template hash) is extended as all ones, in every bank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from vroot.errors import EventLogError
from vroot.eventlog._ima import ImaEntry, UnverifiedImaLog
from vroot.eventlog._pcrs import ReplayedPcrs, hasher
from vroot.tpm2 import HashAlg


def replay_ima_log(
    log: UnverifiedImaLog,
    *,
    banks: Iterable[HashAlg] = (HashAlg.SHA1, HashAlg.SHA256),
    start: Mapping[HashAlg, Mapping[int, bytes]] | None = None,
) -> ReplayedPcrs:
    """The PCRs the entries extend (and those of `start`), by bank.

    `start` is a saved state (for example the `ReplayedPcrs` of the entries read so far), so a
    verifier can replay only the new entries of an incremental read; PCRs it lacks start at zero.
    Raises `EventLogError` for a bank this OpenSSL cannot hash, or an ASCII entry of an unknown
    template (no template data) in a bank other than its template hash's.

    A bank replayed from zero is kept with the log when its entries are a tuple (then nothing in
    it can change), so replaying the same log object again, as verification and then appraisal
    do, returns it without hashing again.
    """
    banks = tuple(HashAlg(b) for b in banks)
    makers = {}
    for alg in banks:
        new = hasher(alg)
        if new is None:
            raise EventLogError(
                f"cannot replay the {alg.bank} bank: hash not available", offset=None, source=log.source
            )
        makers[alg] = new
    start = start or {}
    kept = _kept_replays(log) if type(log.entries) is tuple else {}
    state: dict[HashAlg, dict[int, bytes]] = {}
    for alg in dict.fromkeys(banks):
        # a bank named twice has always been extended twice with each entry: kept as it was
        times = banks.count(alg)
        begin = start.get(alg)
        if not begin and times == 1 and alg in kept:
            state[alg] = kept[alg]
            continue
        values = {int(i): bytes(v) for i, v in (begin or {}).items()}
        entries = log.entries if times == 1 else tuple(e for e in log.entries for _ in range(times))
        if not _extend(entries, alg, makers[alg], values):
            _raise_first_undigestable(log, banks)
        state[alg] = values
        if not begin and times == 1:
            kept[alg] = values  # never changed after this: ReplayedPcrs copies what it is given
    return ReplayedPcrs(state)


def _extend(entries: tuple[ImaEntry, ...], alg: HashAlg, new: Callable, values: dict[int, bytes]) -> bool:
    """Extend `values` (PCR -> value) by the entries in bank `alg`; False, leaving `values` partly
    extended, at an entry whose digest in this bank cannot be computed."""
    size = alg.digest_size
    ones, zero = b"\xff" * size, bytes(size)
    pcr, value = None, zero
    for entry in entries:
        template_hash = entry.template_hash
        if not any(template_hash):  # a violation
            measurement = ones
        elif entry.template_hash_alg is alg:
            measurement = template_hash
        else:
            data = entry.template_data
            if data is None:
                return False
            measurement = new(data).digest()
        if entry.pcr != pcr:  # the PCR being extended stays in locals while entries keep to it
            if pcr is not None:
                values[pcr] = value
            pcr = entry.pcr
            value = values.get(pcr, zero)
        value = new(value + measurement).digest()
    if pcr is not None:
        values[pcr] = value
    return True


def _raise_first_undigestable(log: UnverifiedImaLog, banks: tuple[HashAlg, ...]) -> None:
    """Raise for the first entry, in log order (and bank order within it), whose digest in a bank
    cannot be computed."""
    for entry in log.entries:
        for alg in banks:
            if entry.template_data is None and not entry.violation and alg is not entry.template_hash_alg:
                raise EventLogError(
                    f"line {entry.line}: template {entry.template_name!r} is unknown, so its {alg.bank} "
                    "template digest cannot be computed",
                    offset=entry.offset,
                    source=log.source,
                )
    raise AssertionError("no undigestable entry")  # pragma: no cover - _extend found one


def _kept_replays(log: UnverifiedImaLog) -> dict[HashAlg, dict[int, bytes]]:
    """The log's banks replayed from zero so far (an empty dict, not kept, for a log that cannot hold them)."""
    try:
        return log._replays
    except AttributeError:
        kept: dict[HashAlg, dict[int, bytes]] = {}
        try:
            object.__setattr__(log, "_replays", kept)
        except (AttributeError, TypeError):  # not an UnverifiedImaLog
            pass
        return kept
