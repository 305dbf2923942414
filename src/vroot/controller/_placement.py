"""Where a vTM may go (MC-S3, MC-S4; DESIGN.md section 6, steps 1 and 2): pure decisions over a
snapshot of the fleet, each refusal with its reason.

    rules = MigrationRules(max_verdict_age=timedelta(seconds=120), same_zone=True)
    placement = choose_destination(source=hosts["host:a"], hosts=hosts.values(), rules=rules, now=now)
    placement.destination            # "host:c", or None
    placement.refusals               # (Refusal(host="host:b", code="untrusted", reason="..."), ...)
    plan = plan_evacuation(vms, source=..., hosts=..., rules=rules, now=now)   # capacity counted
    retiring = hosts_to_evacuate(hosts, rules)                                   # policy rules

A destination must be: another host; active (not revoked, not draining); with a latest verdict that
is trusted and younger than `max_verdict_age` (a verdict from the future is refused too: the clocks
disagree); appraised under a baseline that is not being retired; in the source's zone when
`same_zone`; carrying every label of `require_labels`; and with room (`capacity`). Of the hosts
left, the one with the most free room wins (then the fewest vTMs, then the id): migrations spread
rather than fill one host.

The snapshot is only as good as the caller's reading of the store; the controller must still see
the destination prove itself in the migration (its target key certified by its AK, step 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType

__all__ = [
    "REFUSAL_CODES",
    "EvacuationPlan",
    "HostView",
    "MigrationRules",
    "Placement",
    "Refusal",
    "choose_destination",
    "hosts_to_evacuate",
    "plan_evacuation",
]

REFUSAL_CODES: Mapping[str, str] = MappingProxyType({
    "source": "the host the vTM is leaving",
    "not-requested": "the operator asked for another host",
    "inactive": "the host is revoked or not enrolled",
    "draining": "the host is being drained",
    "no-verdict": "the host has never been attested",
    "untrusted": "the host's latest verdict is not trusted",
    "stale-verdict": "the host's latest verdict is older than the policy allows",
    "future-verdict": "the host's latest verdict is dated in the future",
    "retired-baseline": "the host was appraised under a baseline being retired",
    "zone": "the host is in another zone",
    "labels": "the host lacks a label the policy requires",
    "full": "the host has no room for another vTM",
})
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostView:
    """What the controller knows of one host when it decides (read from the store)."""

    agent_id: str
    active: bool = True
    draining: bool = False
    zone: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: int | None = None  # vTMs the host may run; None: no limit
    vtms: int = 0  # running now, plus migrations already heading there
    verdict: str | None = None  # the latest verdict about the host ("trusted", "untrusted", ...)
    verdict_at: datetime | None = None
    result_id: int | None = None
    baseline: tuple[str, int] | None = None  # the baseline (name, version) of that verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationRules:
    """The controller's migration policy (from the server's configuration)."""

    max_verdict_age: timedelta = timedelta(seconds=120)
    same_zone: bool = False
    require_labels: Mapping[str, str] = field(default_factory=dict)
    # Hosts appraised under these baselines are evacuated and never chosen: (name, version), or
    # (name, None) for every version of that baseline.
    retired_baselines: frozenset[tuple[str, int | None]] = frozenset()

    def retires(self, baseline: tuple[str, int] | None) -> bool:
        if baseline is None:
            return False
        name, version = baseline
        return (name, version) in self.retired_baselines or (name, None) in self.retired_baselines


@dataclass(frozen=True, slots=True)
class Refusal:
    host: str
    code: str  # one of REFUSAL_CODES
    reason: str

    def __str__(self) -> str:
        return f"{self.host}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """The chosen destination (None: no host qualifies) and why every other host was not chosen."""

    destination: str | None
    refusals: tuple[Refusal, ...]
    candidates: tuple[str, ...] = ()  # qualifying hosts, best first

    def explain(self) -> str:
        """One line: the choice, or why there is none."""
        if self.destination is not None:
            return f"destination {self.destination} (of {len(self.candidates)} qualifying)"
        if not self.refusals:
            return "no destination: no other host is known"
        return "no destination: " + "; ".join(str(r) for r in self.refusals)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvacuationPlan:
    moves: tuple[tuple[str, Placement], ...]  # (VM, its placement), in the order given

    @property
    def stranded(self) -> tuple[str, ...]:
        """The VMs no host can take now."""
        return tuple(vm for vm, p in self.moves if p.destination is None)


def _refusal(host: HostView, *, source: HostView, rules: MigrationRules, now: datetime) -> Refusal | None:
    def no(code: str, reason: str) -> Refusal:
        return Refusal(host.agent_id, code, reason)

    if host.agent_id == source.agent_id:
        return no("source", "the vTM is leaving this host")
    if not host.active:
        return no("inactive", "revoked or not enrolled")
    if host.draining:
        return no("draining", "being drained")
    if host.verdict is None or host.verdict_at is None:
        return no("no-verdict", "never attested")
    if host.verdict != "trusted":
        which = f" (result #{host.result_id})" if host.result_id is not None else ""
        return no("untrusted", f"latest verdict {host.verdict}{which}")
    age = now - host.verdict_at
    if age < -CLOCK_SKEW:
        return no("future-verdict", f"latest verdict dated {-age.total_seconds():.0f} s in the future")
    if age > rules.max_verdict_age:
        return no("stale-verdict", f"latest trusted verdict is {age.total_seconds():.0f} s old "
                                   f"(at most {rules.max_verdict_age.total_seconds():.0f} s)")  # fmt: skip
    if rules.retires(host.baseline):
        assert host.baseline is not None
        return no("retired-baseline", f"appraised under baseline {host.baseline[0]} v{host.baseline[1]}, being retired")
    if rules.same_zone and host.zone != source.zone:
        return no("zone", f"zone {host.zone!r}, the vTM is in {source.zone!r}")
    missing = {k: v for k, v in rules.require_labels.items() if host.labels.get(k) != v}
    if missing:
        return no("labels", "lacks " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())))
    if host.capacity is not None and host.vtms >= host.capacity:
        return no("full", f"{host.vtms} of {host.capacity} vTMs")
    return None


def _rank(host: HostView) -> tuple[float, int, str]:
    room = float("inf") if host.capacity is None else host.capacity - host.vtms
    return (-room, host.vtms, host.agent_id)


def choose_destination(
    *,
    source: HostView,
    hosts: Iterable[HostView],
    rules: MigrationRules,
    now: datetime,
    to: str | None = None,
) -> Placement:
    """The best destination for one vTM leaving `source`, or None with every host's refusal.

    With `to` (an operator's `--to HOST`), only that host is considered: it must pass every rule
    the same way; the others are refused as "not-requested".
    """
    refusals: list[Refusal] = []
    qualifying: list[HostView] = []
    for host in hosts:
        if to is not None and host.agent_id != to:
            if host.agent_id != source.agent_id:
                refusals.append(Refusal(host.agent_id, "not-requested", f"the operator asked for {to}"))
            continue
        refusal = _refusal(host, source=source, rules=rules, now=now)
        if refusal is None:
            qualifying.append(host)
        else:
            refusals.append(refusal)
    if to is not None and not qualifying and all(r.host != to for r in refusals):
        refusals.append(Refusal(to, "inactive", "not a known host"))
    qualifying.sort(key=_rank)
    return Placement(
        destination=qualifying[0].agent_id if qualifying else None,
        refusals=tuple(sorted(refusals, key=lambda r: r.host)),
        candidates=tuple(h.agent_id for h in qualifying),
    )


def plan_evacuation(
    vms: Sequence[str], *, source: HostView, hosts: Iterable[HostView], rules: MigrationRules, now: datetime
) -> EvacuationPlan:
    """A destination for each of `vms` leaving `source`, counting the room each move takes."""
    fleet = {h.agent_id: h for h in hosts}
    moves = []
    for vm in vms:
        placement = choose_destination(source=source, hosts=fleet.values(), rules=rules, now=now)
        if placement.destination is not None:
            chosen = fleet[placement.destination]
            fleet[chosen.agent_id] = replace(chosen, vtms=chosen.vtms + 1)
        moves.append((vm, placement))
    return EvacuationPlan(moves=tuple(moves))


def hosts_to_evacuate(hosts: Iterable[HostView], rules: MigrationRules) -> list[tuple[str, str]]:
    """The hosts the policy says must be emptied, with the reason: those appraised under a baseline
    being retired. (Draining is the operator's own request, not a rule.)"""
    out = []
    for host in sorted(hosts, key=lambda h: h.agent_id):
        if host.vtms and rules.retires(host.baseline):
            assert host.baseline is not None
            out.append((host.agent_id, f"appraised under baseline {host.baseline[0]} v{host.baseline[1]}, being retired"))
    return out
