"""Gathering the VMs of one host that answer at about the same time into one batch (RA-4: one host
deep quote serves many VMs; a hardware TM quote costs hundreds of milliseconds).

    batches = Batcher(window=1.0)
    sealed, index = batches.join("host:h1", member, complete=all_in, seal=make_deep_quote_task)

The first member of a host's open batch leads it: it lingers a moment (`linger`, at most the
window: the VMs challenged with it may not all have been asked yet when it answers), then waits
until `complete(members)` holds (every VM of the host that has a challenge open has joined) or
`window` seconds have passed, then seals the batch with `seal(members)` (which persists it: the
deep-quote task) and wakes the others. Every member gets what `seal` returned and its own index,
or the error `seal` raised.

The open batch lives in this replica's memory only while it gathers, at most `window` seconds;
what a sealed batch is, is in the store. Members that reach other replicas make batches of their
own there: fewer VMs per host quote, never a wrong one. A replica that dies while a batch
gathers loses only the waiting requests, whose agents' task leases expire and are handed out again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vroot.errors import Unavailable

__all__ = ["Batcher"]

T = TypeVar("T")
SEAL_GRACE = 60.0  # how long a member waits for a leader that is sealing, beyond the window
LINGER = 0.2


@dataclass(slots=True)
class _Batch(Generic[T]):
    members: list[T] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    sealed: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher(Generic[T]):
    """Open batches by key (a host agent id). Thread-safe; members block in `join`."""

    def __init__(self, *, window: float, linger: float = LINGER) -> None:
        self._window = max(float(window), 0.0)
        self._linger = min(max(float(linger), 0.0), self._window)
        self._lock = threading.Lock()
        self._open: dict[str, _Batch[T]] = {}

    def join(self, key: str, member: T, *, complete: Callable[[list[T]], bool],
             seal: Callable[[list[T]], Any]) -> tuple[Any, int]:  # fmt: skip
        """Add `member` to the open batch of `key` and wait for it to be sealed (module docstring)."""
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            index = len(batch.members)
            batch.members.append(member)
            members = list(batch.members)
        if leader:
            started = time.monotonic()
            time.sleep(self._linger)
            with self._lock:
                members = list(batch.members)
            if complete(members):
                batch.full.set()
            batch.full.wait(max(self._window - (time.monotonic() - started), 0.0))
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
                members = list(batch.members)
            try:
                batch.result = seal(members)
            except BaseException as exc:  # every member reports it
                batch.error = exc
            finally:
                batch.sealed.set()
        else:
            if complete(members):
                batch.full.set()
            if not batch.sealed.wait(self._window + SEAL_GRACE):
                raise Unavailable(f"the batch of {key} was not sealed in time")
        if batch.error is not None:
            raise batch.error
        return batch.result, index
