"""Verify the links of a transitive-trust chain in a platform's logs (TT-1..TT-3, IM-1).

`verify_chain` checks that the logs hold every stage of a chain, in the chain's order, each
measured by a stage that was itself measured before (the root of trust measures itself), and
that IMA's boot_aggregate equals the firmware-phase PCRs. `diff_stages` says which stage's
digest differs from a reference plan (a known-good boot of the same chain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from vroot.errors import ChainBroken
from vroot.eventlog import EventType, UnverifiedImaLog, UnverifiedTcgLog, ipl_string
from vroot.measure._chain import Stage, StageKind
from vroot.measure._plan import BOOT_AGGREGATE, BootPlan, _boot_aggregate, _tcg_event
from vroot.tpm2 import HashAlg

__all__ = ["StageDifference", "VerifiedChain", "diff_stages", "verify_chain"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedChain:
    """Every stage of a chain found in the logs, in order: stage name → its digests per bank."""

    stages: tuple[Stage, ...]
    digests: Mapping[str, Mapping[HashAlg, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageDifference:
    """A stage whose measurement differs from the reference (`seen` None: stage absent)."""

    stage: str
    pcr: int
    bank: HashAlg
    expected: bytes
    seen: bytes | None


def _expected_type(stage: Stage) -> int:
    return int(_tcg_event(stage, b"x")[0])


def verify_chain(
    chain: Sequence[Stage],
    tcg_log: UnverifiedTcgLog,
    ima_log: UnverifiedImaLog,
    *,
    ima_alg: HashAlg = HashAlg.SHA256,
) -> VerifiedChain:
    """Prove each link of `chain` is in the logs, in order, measured before it ran.

    Proves: the TCG log holds one event per firmware-phase stage, in chain order, at the stage's
    PCR and event type, with no other measured event between them; the IMA log starts with a
    boot_aggregate equal to H(PCR 0..9) of the replayed TCG log, then holds the runtime stages in
    order (by path); every stage's measurer is a stage logged before it (or itself, for the root).
    Does not prove: that the logs are what the TM holds (replay them against a verified quote
    first) or that any digest is good (compare with `diff_stages` or a baseline).
    Raises `ChainBroken` naming the first stage that does not hold.
    """
    seen: dict[str, int] = {}
    digests: dict[str, Mapping[HashAlg, bytes]] = {}
    events = [e for e in tcg_log.events if int(e.event_type) != EventType.EV_NO_ACTION]
    ima = list(ima_log.entries)
    position = 0
    ima_position = 0
    for order, stage in enumerate(chain):
        if stage.measured_by != stage.name and stage.measured_by not in seen:
            raise ChainBroken(
                f"stage {stage.name}: its measurer {stage.measured_by} was not measured before it ran"
            )
        if stage.kind is StageKind.IMA:
            if ima_position == 0:
                _check_no_more(events, position)
                _check_boot_aggregate(ima, tcg_log, ima_alg)
                ima_position = 1
            want_path = stage.path or stage.file
            if ima_position >= len(ima) or ima[ima_position].path != want_path:
                got = ima[ima_position].path if ima_position < len(ima) else "end of log"
                raise ChainBroken(f"stage {stage.name}: IMA entry {ima_position} is {got}, want {want_path}")
            entry = ima[ima_position]
            digests[stage.name] = MappingProxyType({ima_alg: entry.file_digest or b""})
            ima_position += 1
        else:
            if position >= len(events):
                raise ChainBroken(f"stage {stage.name}: not in the TCG log (log ends first)")
            event = events[position]
            want_type = _expected_type(stage)
            want_data = ipl_string(stage.path) if stage.kind is StageKind.IPL_FILE and stage.path else None
            if (
                event.pcr != stage.pcr
                or int(event.event_type) != want_type
                or (want_data is not None and event.data != want_data)
            ):
                raise ChainBroken(
                    f"stage {stage.name}: TCG event {event.index} is PCR {event.pcr} type 0x{int(event.event_type):x}, "
                    f"want PCR {stage.pcr} type 0x{want_type:x}"
                )
            digests[stage.name] = event.digests
            position += 1
        seen[stage.name] = order
    _check_no_more(events, position)
    if ima_position and ima_position != len(ima):
        raise ChainBroken(f"IMA entry {ima_position} ({ima[ima_position].path}) is not a stage of the chain")
    return VerifiedChain(stages=tuple(chain), digests=MappingProxyType(digests))


def _check_no_more(events: list, position: int) -> None:
    if position != len(events):
        extra = events[position]
        raise ChainBroken(f"TCG event {extra.index} (PCR {extra.pcr}) is not a stage of the chain")


def _check_boot_aggregate(ima: list, tcg_log: UnverifiedTcgLog, alg: HashAlg) -> None:
    if not ima or ima[0].path != BOOT_AGGREGATE:
        raise ChainBroken("the IMA log does not start with boot_aggregate")
    want = _boot_aggregate(tcg_log, alg)
    if ima[0].file_digest != want:
        raise ChainBroken(
            f"boot_aggregate {(ima[0].file_digest or b'').hex()} does not match the firmware log's PCR 0-9 "
            f"({want.hex()})"
        )


def diff_stages(
    reference: BootPlan, seen: VerifiedChain, *, bank: HashAlg = HashAlg.SHA256
) -> tuple[StageDifference, ...]:
    """The stages whose digest in `seen` differs from the `reference` plan, in chain order.

    For TCG stages the `bank` digest is compared; for IMA stages the file digest.
    """
    out = []
    ima_entries = reference.ima_log.entries
    for m in reference.measurements:
        if m.stage is None:
            continue
        name = m.stage.name
        if m.ima_index is not None:
            want = ima_entries[m.ima_index].file_digest or b""
            got_map = seen.digests.get(name, {})
            got = next(iter(got_map.values()), None) if got_map else None
        else:
            want = m.digests[bank]
            got = seen.digests.get(name, {}).get(bank)
        if got != want:
            out.append(StageDifference(stage=name, pcr=m.pcr, bank=bank, expected=want, seen=got))
    return tuple(out)
