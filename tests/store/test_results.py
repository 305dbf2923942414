"""RA-6: attestation results with history, verdict-change events, and incremental IMA state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import NOW, add_guest, add_host, race

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store import ImaStateRecord, NewResult, Store, Verdict

PCRS = {"sha256": {0: b"\x11" * 32, 10: b"\xff" * 32}, "sha1": {0: b"\x22" * 20}}
FINDINGS = ({"id": "baseline.pcr0.unknown_firmware", "severity": "high", "pcr": 0, "event": 3},)


def result(agent_id: str = "host:h1", verdict: Verdict = Verdict.TRUSTED, **kw: object) -> NewResult:
    return NewResult(agent_id=agent_id, verdict=verdict, **kw)


def test_record_round_trip(store: Store) -> None:
    add_host(store)
    out = store.results.record(
        result(
            verdict=Verdict.UNTRUSTED,
            findings=FINDINGS,
            pcrs=PCRS,
            evidence_digest=b"\x01" * 32,
            clock=2**63 - 1,
            reset_count=7,
            restart_count=2,
            signed="eyJhbGciOiJFUzI1NiJ9.e30.sig",
        ),
        now=NOW,
    )
    got = store.results.get(out.result.id)
    assert got == out.result
    assert got.pcrs == PCRS and got.findings == FINDINGS and got.clock == 2**63 - 1 and got.created_at == NOW
    assert store.results.latest("host:h1") == got


def test_verdict_changed_event_only_on_change(store: Store) -> None:
    add_host(store)
    verdicts = ["trusted", "trusted", "untrusted", "untrusted", "trusted"]
    outs = [
        store.results.record(result(verdict=v), now=NOW + timedelta(minutes=i))
        for i, v in enumerate(verdicts)
    ]
    assert [o.event_id is not None for o in outs] == [True, False, True, False, True]
    assert [o.previous_verdict for o in outs] == [None, "trusted", "trusted", "untrusted", "untrusted"]
    events = store.events.since(0, kinds=["verdict.changed"])
    assert [(e.body["verdict"], e.body["previous"]) for e in events] == [
        ("trusted", None),
        ("untrusted", "trusted"),
        ("trusted", "untrusted"),
    ]
    assert events[1].body["result_id"] == outs[2].result.id and events[1].agent_id == "host:h1"


def test_history_newest_first_with_paging(store: Store) -> None:
    add_host(store)
    ids = [store.results.record(result(), now=NOW + timedelta(minutes=i)).result.id for i in range(5)]
    page = store.results.history("host:h1", limit=2)
    assert [r.id for r in page] == ids[:-3:-1]
    assert [r.id for r in store.results.history("host:h1", limit=10, before_id=page[-1].id)] == ids[2::-1]
    assert store.results.history("host:other") == [] and store.results.latest("host:other") is None


def test_latest_for_many_agents(store: Store) -> None:
    add_host(store)
    add_host(store, "host:h2")
    add_host(store, "host:h3")
    store.results.record(result("host:h1", Verdict.TRUSTED), now=NOW)
    store.results.record(result("host:h2", Verdict.TRUSTED), now=NOW)
    store.results.record(result("host:h1", Verdict.UNTRUSTED), now=NOW)
    latest = store.results.latest_for(["host:h1", "host:h2", "host:h3"])
    assert {k: v.verdict for k, v in latest.items()} == {"host:h1": "untrusted", "host:h2": "trusted"}
    assert store.results.latest_for([]) == {}


def test_vm_result_joined_with_host_result(store: Store) -> None:
    """RA-4: a VM verdict records the host result of the same deep quote."""
    add_host(store)
    add_guest(store, "vm:1", host_id="host:h1")
    host = store.results.record(result("host:h1"), now=NOW).result
    vm = store.results.record(result("vm:1", host_result_id=host.id), now=NOW).result
    assert store.results.get(vm.id).host_result_id == host.id
    with pytest.raises(InvalidInput, match="not a host"):
        store.results.record(result("vm:1", host_result_id=vm.id), now=NOW)
    with pytest.raises(NotFound):
        store.results.record(result("vm:1", host_result_id=10_000), now=NOW)
    with pytest.raises(NotFound):
        store.results.record(result("vm:none"), now=NOW)


def test_concurrent_records_publish_each_change_once(store: Store, open_store) -> None:
    """Records of one agent are serialized: "previous" is exact, so events match the history."""
    add_host(store)
    other = open_store()
    verdicts = [Verdict.TRUSTED, Verdict.UNTRUSTED] * 6
    race(12, lambda i: (store if i % 2 else other).results.record(result(verdict=verdicts[i]), now=NOW))
    history = list(reversed(store.results.history("host:h1", limit=100)))
    changes = [r.verdict for i, r in enumerate(history) if i == 0 or history[i - 1].verdict != r.verdict]
    events = store.events.since(0, kinds=["verdict.changed"], limit=100)
    assert [e.body["verdict"] for e in events] == changes


def test_ima_state_optimistic_concurrency(store: Store) -> None:
    add_host(store)
    assert store.ima_state.get("host:h1") is None
    first = store.ima_state.put(
        ImaStateRecord(
            agent_id="host:h1",
            entries=1000,
            byte_offset=123_456,
            pcr10={"sha256": b"\x0a" * 32},
            last_verdict=Verdict.TRUSTED,
            reset_count=3,
        ),
        now=NOW,
    )
    assert first.version == 1 and store.ima_state.get("host:h1") == first
    with pytest.raises(Conflict, match="already exists"):
        store.ima_state.put(ImaStateRecord(agent_id="host:h1"), now=NOW)
    from dataclasses import replace

    second = store.ima_state.put(
        replace(first, entries=1500, byte_offset=200_000), now=NOW + timedelta(minutes=1)
    )
    assert (second.version, second.entries, second.updated_at) == (2, 1500, NOW + timedelta(minutes=1))
    with pytest.raises(Conflict, match="version 2, not 1"):
        store.ima_state.put(replace(first, entries=1600), now=NOW)
    assert store.ima_state.get("host:h1").entries == 1500
    assert store.ima_state.delete("host:h1") and store.ima_state.get("host:h1") is None
    with pytest.raises(NotFound):
        store.ima_state.put(ImaStateRecord(agent_id="host:none"), now=NOW)


def test_ima_state_racing_puts_one_wins(store: Store, open_store) -> None:
    from dataclasses import replace

    add_host(store)
    other = open_store()
    base = store.ima_state.put(ImaStateRecord(agent_id="host:h1"), now=NOW)
    outcomes = race(
        8, lambda i: (store if i % 2 else other).ima_state.put(replace(base, entries=i + 1), now=NOW)
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1 and all(
        isinstance(o, Conflict) for o in outcomes if isinstance(o, BaseException)
    )
    assert store.ima_state.get("host:h1") == winners[0]


def test_ra6_due_agents_are_those_without_a_result_since_the_cutoff(store: Store) -> None:
    """RA-6: the scheduler's one query: active agents of the given groups whose newest result is
    missing or not newer than the cutoff; guests only when asked, and only on an active host."""
    from vroot.store import AgentState

    active = {"state": AgentState.ACTIVE, "group": "fleet"}
    add_host(store, "host:fresh", **active)
    add_host(store, "host:stale", **active)
    add_host(store, "host:never", **active)
    add_host(store, "host:other-group", state=AgentState.ACTIVE, group="lab")
    add_host(store, "host:enrolling", group="fleet")
    add_host(store, "host:down", state=AgentState.REVOKED, group="fleet")
    add_guest(store, "vm:on-fresh", host_id="host:fresh", **active)
    add_guest(store, "vm:on-down", host_id="host:down", **active)
    store.results.record(result("host:fresh"), now=NOW - timedelta(minutes=5))
    store.results.record(result("host:fresh"), now=NOW)  # the newest one counts, not the first
    store.results.record(result("host:stale"), now=NOW - timedelta(minutes=2))
    store.results.record(result("host:stale"), now=NOW - timedelta(minutes=1))
    cutoff = NOW - timedelta(seconds=60)
    assert store.results.due(groups=["fleet"], cutoff=cutoff, guests=False) == ["host:never", "host:stale"]
    assert store.results.due(groups=["fleet"], cutoff=cutoff, guests=True) == ["host:never", "host:stale",
                                                                              "vm:on-fresh"]  # fmt: skip
    assert store.results.due(groups=["fleet", "lab"], cutoff=NOW, guests=False) == [
        "host:fresh", "host:never", "host:other-group", "host:stale"]  # fmt: skip
    assert store.results.due(groups=[], cutoff=NOW, guests=True) == []
