"""Helpers shared by the store tests (importable as `store_helpers`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from vroot.store import AgentKind, AgentRecord, Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def add_host(store: Store, agent_id: str = "host:h1", **kw: object) -> AgentRecord:
    return store.agents.add(
        AgentRecord(
            id=agent_id, kind=AgentKind.HOST, ek_public=b"ek-" + agent_id.encode(), created_at=NOW, **kw
        )
    )


def add_guest(store: Store, agent_id: str, *, host_id: str, **kw: object) -> AgentRecord:
    return store.agents.add(
        AgentRecord(
            id=agent_id,
            kind=AgentKind.GUEST,
            host_id=host_id,
            ek_public=b"vek-" + agent_id.encode(),
            created_at=NOW,
            **kw,
        )
    )


def race(n: int, fn: Callable[[int], T]) -> list[T | BaseException]:
    """Run fn(0..n-1) in n threads released together; each slot holds a result or the exception."""
    barrier = threading.Barrier(n)
    out: list[T | BaseException] = [RuntimeError("did not run")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return out
