"""Replay an IMA list into PCR values (DESIGN.md section 2).

Each entry extends its PCR (10 unless the kernel was configured otherwise) in every bank:

- the bank of the logged template hash (SHA-1 in the standard lists) gets that hash;
- every other bank gets the bank's hash of the template data, as the kernel computes one
  template digest per allocated TPM bank (ima_calc_field_array_hash);
- a violation (all-zero template hash) is extended as all ones, in every bank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vroot.errors import EventLogError
from vroot.eventlog._ima import UnverifiedImaLog
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
    """
    banks = tuple(HashAlg(b) for b in banks)
    state: dict[HashAlg, dict[int, bytes]] = {}
    makers = {}
    for alg in banks:
        new = hasher(alg)
        if new is None:
            raise EventLogError(
                f"cannot replay the {alg.bank} bank: hash not available", offset=None, source=log.source
            )
        makers[alg] = new
        state[alg] = {int(i): bytes(v) for i, v in (start or {}).get(alg, {}).items()}
    for entry in log.entries:
        pcr = entry.pcr
        violation = entry.violation
        for alg in banks:
            size = alg.digest_size
            if violation:
                measurement = b"\xff" * size
            elif alg is entry.template_hash_alg:
                measurement = entry.template_hash
            elif entry.template_data is None:
                raise EventLogError(
                    f"line {entry.line}: template {entry.template_name!r} is unknown, so its {alg.bank} "
                    "template digest cannot be computed",
                    offset=entry.offset,
                    source=log.source,
                )
            else:
                measurement = makers[alg](entry.template_data).digest()
            bank = state[alg]
            bank[pcr] = makers[alg](bank.get(pcr, bytes(size)) + measurement).digest()
    return ReplayedPcrs(state)
