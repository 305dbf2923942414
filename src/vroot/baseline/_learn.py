"""Learn a baseline from a known-good platform's logs (what `vroot baseline learn` does).

Proves nothing: the operator vouches that the platform was good when the logs were taken, and the
logs are not checked against a quote here. Caller must: learn only from a platform it trusts, in
the state it wants to accept (replaying the logs against that platform's quote first is wise).
"""

from __future__ import annotations

from collections.abc import Iterable

from vroot.baseline._model import Baseline, ImaReference, ReferenceValue
from vroot.errors import InvalidInput
from vroot.eventlog import (
    EventType,
    TcgEvent,
    UnverifiedImaLog,
    UnverifiedTcgLog,
    describe_event,
    event_type_name,
)
from vroot.tpm2 import HashAlg

__all__ = ["DEFAULT_LEARN_PCRS", "learn_baseline"]

# PCRs 0-15 but 10: the firmware, boot loader and OS-loader PCRs. PCR 10 is IMA (never in the
# firmware log), 16 is debug and 17-23 are DRTM and application PCRs.
DEFAULT_LEARN_PCRS: frozenset[int] = frozenset(range(16)) - {10}
_NO_ACTION = int(EventType.EV_NO_ACTION)
_COMPONENT_CHARS = 120


def learn_baseline(
    *,
    tcg_log: UnverifiedTcgLog,
    ima_log: UnverifiedImaLog | None,
    name: str,
    version: str,
    include_pcrs: Iterable[int] = DEFAULT_LEARN_PCRS,
    required: bool = True,
    description: str = "",
) -> Baseline:
    """A baseline holding every measured event of `tcg_log` in `include_pcrs` (once each: the
    same PCR, type and digests seen twice is one reference value), and, from `ima_log`, every
    measured path with its file digests (violations and undecodable entries are skipped).

    `required` marks the learnt events required, so an appraisal also reports the ones a later
    boot no longer measures (`baseline.event.missing`). Components are named from the event data
    (file path, variable name, text) and described with `describe_event`; their version is empty.
    """
    if not isinstance(tcg_log, UnverifiedTcgLog):
        raise InvalidInput("learn_baseline needs a parsed TCG log (parse_tcg_log)")
    if ima_log is not None and not isinstance(ima_log, UnverifiedImaLog):
        raise InvalidInput("learn_baseline needs a parsed IMA log (parse_ima_log) or None")
    pcrs = frozenset(include_pcrs)
    if not all(type(i) is int and 0 <= i <= 31 for i in pcrs):
        raise InvalidInput("learn_baseline: include_pcrs must be PCR indices 0-31")
    seen: set[tuple[int, int, tuple[tuple[int, bytes], ...]]] = set()
    values: list[ReferenceValue] = []
    for event in tcg_log.measurements:
        event_type = int(event.event_type)
        if event.pcr not in pcrs or event_type == _NO_ACTION:
            continue
        digests = {alg: d for alg, d in event.digests.items() if isinstance(alg, HashAlg)}
        if not digests:
            continue
        key = (event.pcr, event_type, tuple(sorted((int(a), d) for a, d in digests.items())))
        if key in seen:
            continue
        seen.add(key)
        summary = describe_event(event).summary
        values.append(
            ReferenceValue(
                component=_component(event, event_type),
                pcr=event.pcr,
                event_type=event_type,
                digests=digests,
                description=summary[:1024],
                required=required,
            )
        )
    ima = None if ima_log is None else _ima_reference(ima_log)
    return Baseline(name=name, version=version, reference_values=tuple(values), ima=ima, description=description)


def _component(event: TcgEvent, event_type: int) -> str:
    """A short name for what an event measured."""
    description = describe_event(event)
    fields = description.fields
    label = None
    if description.error is None:
        paths = fields.get("file_paths")
        if paths:
            label = paths[-1]
        elif isinstance(fields.get("name"), str) and "guid" in fields:
            label = fields["name"]
        elif isinstance(fields.get("text"), str):
            label = fields["text"]
        elif event_type == EventType.EV_S_CRTM_VERSION:
            label = "S-CRTM version"
        elif event_type == EventType.EV_SEPARATOR:
            label = "separator"
    lines = label.strip().splitlines() if isinstance(label, str) else []
    text = lines[0].strip().replace("\x00", "") if lines else ""
    return text[:_COMPONENT_CHARS] or event_type_name(event_type)


def _ima_reference(log: UnverifiedImaLog) -> ImaReference:
    digests: dict[str, set[bytes]] = {}
    for entry in log.entries:
        if not any(entry.template_hash) or entry.path is None or entry.file_digest is None:
            continue
        if not entry.file_digest or "\n" in entry.path or "\x00" in entry.path:
            continue
        digests.setdefault(entry.path, set()).add(entry.file_digest)
    return ImaReference(digests={p: frozenset(d) for p, d in digests.items()})
