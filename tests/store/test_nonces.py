"""RA-2: challenge nonces are fresh, bound to one agent and purpose, and used at most once."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest
from store_helpers import NOW, add_host, race

from vroot.errors import InvalidInput, NonceExpired, NonceReused, NonceUnknown, NotFound
from vroot.store import Store

TTL = timedelta(minutes=2)


def issue(store: Store, agent_id: str = "host:h1", purpose: str = "attest", now: datetime = NOW) -> bytes:
    return store.nonces.issue(agent_id=agent_id, purpose=purpose, now=now, ttl=TTL, rng=os.urandom)


def test_issue_draws_32_bytes_from_rng(store: Store) -> None:
    add_host(store)
    drawn: list[int] = []

    def rng(n: int) -> bytes:
        drawn.append(n)
        return bytes(range(n))

    value = store.nonces.issue(agent_id="host:h1", purpose="attest", now=NOW, ttl=TTL, rng=rng)
    assert drawn == [32] and value == bytes(range(32))
    record = store.nonces.find(value)
    assert record is not None
    assert (record.agent_id, record.purpose, record.issued_at, record.expires_at, record.used_at) == (
        "host:h1",
        "attest",
        NOW,
        NOW + TTL,
        None,
    )


def test_consume_once_then_reused(store: Store) -> None:
    add_host(store)
    value = issue(store)
    used = store.nonces.consume(value, agent_id="host:h1", purpose="attest", now=NOW + timedelta(seconds=5))
    assert used.used_at == NOW + timedelta(seconds=5) and used.value == value
    with pytest.raises(NonceReused, match="already used"):
        store.nonces.consume(value, agent_id="host:h1", purpose="attest", now=NOW + timedelta(seconds=6))


def test_expired_nonce_refused_and_stays_unused(store: Store) -> None:
    add_host(store)
    value = issue(store)
    with pytest.raises(NonceExpired, match="expired"):
        store.nonces.consume(value, agent_id="host:h1", purpose="attest", now=NOW + TTL)
    record = store.nonces.find(value)
    assert record is not None and record.used_at is None


@pytest.mark.parametrize(
    ("agent_id", "purpose"),
    [("host:h2", "attest"), ("host:h1", "migrate")],
    ids=["other-agent", "other-purpose"],
)
def test_nonce_bound_to_agent_and_purpose(store: Store, agent_id: str, purpose: str) -> None:
    """A nonce issued to host:h1 for attest is unknown to anyone else (RA-7: no relay)."""
    add_host(store)
    add_host(store, "host:h2")
    value = issue(store)
    with pytest.raises(NonceUnknown, match="no nonce was issued"):
        store.nonces.consume(value, agent_id=agent_id, purpose=purpose, now=NOW)
    # ...and the failed attempt did not burn it for its rightful owner
    assert store.nonces.consume(value, agent_id="host:h1", purpose="attest", now=NOW).used_at == NOW


def test_never_issued_is_unknown(store: Store) -> None:
    add_host(store)
    with pytest.raises(NonceUnknown):
        store.nonces.consume(b"\x00" * 32, agent_id="host:h1", purpose="attest", now=NOW)


def test_issue_refuses_bad_arguments(store: Store) -> None:
    add_host(store)
    with pytest.raises(InvalidInput, match="must return 32 bytes"):
        store.nonces.issue(agent_id="host:h1", purpose="attest", now=NOW, ttl=TTL, rng=lambda n: b"short")
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.nonces.issue(
            agent_id="host:h1", purpose="attest", now=NOW.replace(tzinfo=None), ttl=TTL, rng=os.urandom
        )
    with pytest.raises(InvalidInput, match="ttl must be positive"):
        store.nonces.issue(agent_id="host:h1", purpose="attest", now=NOW, ttl=timedelta(0), rng=os.urandom)
    with pytest.raises(NotFound, match="host:nope"):
        issue(store, agent_id="host:nope")


def test_purge_removes_only_expired(store: Store) -> None:
    add_host(store)
    old = issue(store, now=NOW - timedelta(hours=1))
    fresh = issue(store)
    assert store.nonces.purge(before=NOW) == 1
    assert store.nonces.find(old) is None and store.nonces.find(fresh) is not None


def test_concurrent_consumers_exactly_one_wins(store: Store, open_store) -> None:
    """RA-2/RA-7: many threads (and on two Store objects, as two replicas) race for one nonce."""
    add_host(store)
    other = open_store()
    for _round in range(3):
        value = issue(store)

        def consume(i: int, value: bytes = value) -> object:
            s = store if i % 2 else other
            return s.nonces.consume(value, agent_id="host:h1", purpose="attest", now=NOW)

        outcomes = race(12, consume)
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert all(isinstance(e, NonceReused) for e in losers), losers
