"""Firmware bugs that make real logs fail to replay: the one table, each entry with its evidence.

`verify_replay` tries these only after a plain replay failed, each on a copy of the log, and only
when the entry's PCRs are among the failing ones; the result names the workaround used. Add an
entry only with a real log that needs it (in ../shared/corpora or tests) and its provenance.
"""

from __future__ import annotations

from vroot.eventlog._event_types import EventType
from vroot.eventlog._record import Record
from vroot.eventlog._tcg import UnverifiedTcgLog, append_events
from vroot.tpm2 import HashAlg


class Workaround(Record):
    """A known firmware bug: `apply(log)` returns a patched copy, or None when it does not apply."""

    __slots__ = ("id", "pcrs", "evidence", "apply")


_EBS_INVOCATION = b"Exit Boot Services Invocation"
_EBS_SUCCESS = b"Exit Boot Services Returned with Success"


def _add_exit_boot_services_events(log: UnverifiedTcgLog) -> UnverifiedTcgLog | None:
    """Append the two EV_EFI_ACTION events of PCR 5 that the firmware extended but did not log."""
    for event in log.measurements:
        if event.pcr == 5 and event.event_type == EventType.EV_EFI_ACTION and event.data == _EBS_INVOCATION:
            return None  # the events are there: this is not the bug
    algs = [alg for alg in log.algorithms if isinstance(alg, HashAlg)]
    additions = []
    for text in (_EBS_INVOCATION, _EBS_SUCCESS):
        digests = {alg: alg.digest(text) for alg in algs}
        additions.append((5, EventType.EV_EFI_ACTION, text, digests))
    return append_events(log, additions)


WORKAROUNDS: tuple[Workaround, ...] = (
    Workaround(
        id="exit-boot-services-events-missing",
        pcrs=frozenset({5}),
        evidence=(
            "Firmware that extends PCR 5 with the EV_EFI_ACTION events 'Exit Boot Services Invocation' "
            "and 'Exit Boot Services Returned with Success' (digest = hash of the ASCII string) without "
            "logging them. Seen in go-attestation's attest/testdata/ebs_event_missing_eventlog "
            "(../shared/corpora/go-attestation, PCR 5 = 31245808... only with both events appended; "
            "go-attestation attest/eventlog_workarounds.go applies the same fix)."
        ),
        apply=_add_exit_boot_services_events,
    ),
)

__all__ = ["WORKAROUNDS", "Workaround"]
