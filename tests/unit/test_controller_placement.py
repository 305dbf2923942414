"""The migration controller's choice of destination (MC-S3, MC-S4; DESIGN.md section 6 step 2):
only another active, undrained host whose latest verdict is trusted and fresh, under a baseline
not being retired, in the zone and with the labels the policy asks, with room; each refusal names
its reason; evacuations count the room they take; retiring baselines evacuate hosts (MC-F1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vroot.controller import (
    REFUSAL_CODES,
    HostView,
    MigrationRules,
    choose_destination,
    hosts_to_evacuate,
    plan_evacuation,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULES = MigrationRules(max_verdict_age=timedelta(seconds=120))


def host(name: str, **kw: object) -> HostView:
    base: dict[str, object] = {"agent_id": f"host:{name}", "zone": "z1", "verdict": "trusted",
                               "verdict_at": NOW - timedelta(seconds=10), "result_id": 7,
                               "baseline": ("hosts", 2), "capacity": 10, "vtms": 0}  # fmt: skip
    base.update(kw)
    return HostView(**base)  # type: ignore[arg-type]


SOURCE = host("src", vtms=3)


@pytest.mark.parametrize(
    ("candidate", "rules", "code", "words"),
    [
        (host("src"), RULES, "source", "leaving"),
        (host("b", active=False), RULES, "inactive", "revoked"),
        (host("b", draining=True), RULES, "draining", "drained"),
        (host("b", verdict=None, verdict_at=None), RULES, "no-verdict", "never attested"),
        (host("b", verdict="untrusted"), RULES, "untrusted", "untrusted (result #7)"),
        (host("b", verdict="error"), RULES, "untrusted", "latest verdict error"),
        (host("b", verdict_at=NOW - timedelta(seconds=121)), RULES, "stale-verdict", "121 s old (at most 120 s)"),
        (host("b", verdict_at=NOW + timedelta(seconds=600)), RULES, "future-verdict", "600 s in the future"),
        (host("b"), MigrationRules(retired_baselines=frozenset({("hosts", 2)})), "retired-baseline", "hosts v2"),
        (host("b"), MigrationRules(retired_baselines=frozenset({("hosts", None)})), "retired-baseline", "retired"),
        (host("b", zone="z2"), MigrationRules(same_zone=True), "zone", "zone 'z2', the vTM is in 'z1'"),
        (host("b", labels={"gpu": "no"}), MigrationRules(require_labels={"gpu": "yes"}), "labels", "lacks gpu=yes"),
        (host("b", vtms=10), RULES, "full", "10 of 10 vTMs"),
    ],
)
def test_mc_s3_each_rule_refuses_with_its_reason(candidate, rules, code, words):
    placement = choose_destination(source=SOURCE, hosts=[candidate], rules=rules, now=NOW)
    assert placement.destination is None and placement.candidates == ()
    (refusal,) = placement.refusals
    assert refusal.code == code and code in REFUSAL_CODES and words in refusal.reason
    assert words in placement.explain() and placement.explain().startswith("no destination:")


def test_mc_s4_a_host_passing_every_rule_is_chosen_and_the_emptiest_wins():
    hosts = [host("src", vtms=3), host("busy", vtms=8), host("idle", vtms=1), host("bad", verdict="untrusted"),
             host("nolimit", capacity=None, vtms=50)]  # fmt: skip
    placement = choose_destination(source=hosts[0], hosts=hosts, rules=RULES, now=NOW)
    assert placement.destination == "host:nolimit"  # unlimited room first
    assert placement.candidates == ("host:nolimit", "host:idle", "host:busy")
    assert {r.host: r.code for r in placement.refusals} == {"host:src": "source", "host:bad": "untrusted"}
    assert placement.explain() == "destination host:nolimit (of 3 qualifying)"
    # same room: fewer vTMs, then the id
    tie = choose_destination(source=SOURCE, hosts=[host("b", capacity=None, vtms=2), host("a", capacity=None, vtms=2)],
                             rules=RULES, now=NOW)  # fmt: skip
    assert tie.destination == "host:a"


def test_mc_f1_operator_to_host_is_checked_like_any_other():
    hosts = [host("b"), host("c", verdict="untrusted")]
    assert choose_destination(source=SOURCE, hosts=hosts, rules=RULES, now=NOW, to="host:b").destination == "host:b"
    refused = choose_destination(source=SOURCE, hosts=hosts, rules=RULES, now=NOW, to="host:c")
    assert refused.destination is None
    assert {r.host: r.code for r in refused.refusals} == {"host:b": "not-requested", "host:c": "untrusted"}
    unknown = choose_destination(source=SOURCE, hosts=hosts, rules=RULES, now=NOW, to="host:zz")
    assert unknown.destination is None and ("host:zz", "inactive") in {(r.host, r.code) for r in unknown.refusals}


def test_mc_s4_evacuation_counts_room_and_names_stranded_vms():
    hosts = [SOURCE, host("b", capacity=2, vtms=1), host("c", capacity=3, vtms=1), host("d", verdict="untrusted")]
    plan = plan_evacuation(["vm1", "vm2", "vm3", "vm4"], source=SOURCE, hosts=hosts, rules=RULES, now=NOW)
    chosen = [p.destination for _, p in plan.moves]
    assert chosen == ["host:c", "host:b", "host:c", None]  # c has 2 free, b 1: 3 places for 4 VMs
    assert plan.stranded == ("vm4",)
    assert all(r.code != "untrusted" or r.host == "host:d" for _, p in plan.moves for r in p.refusals)
    last = plan.moves[-1][1]
    assert {r.host: r.code for r in last.refusals}["host:b"] == "full"


def test_mc_f1_hosts_under_a_retired_baseline_are_evacuated():
    rules = MigrationRules(retired_baselines=frozenset({("fw", 1)}))
    hosts = [host("a", baseline=("fw", 1), vtms=2), host("b", baseline=("fw", 2), vtms=2),
             host("c", baseline=("fw", 1), vtms=0)]  # fmt: skip
    assert hosts_to_evacuate(hosts, rules) == [("host:a", "appraised under baseline fw v1, being retired")]
    assert hosts_to_evacuate(hosts, RULES) == []
