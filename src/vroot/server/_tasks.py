"""The agent protocol's task queue (DESIGN.md sections 5 and 7): agents connect out, long-poll for
their next task, and post its result. Tasks the server runs itself (`attest`, made by
`Attestations.request` with its nonce) cannot be queued through `enqueue`.

A lease belongs to the agent (owner = agent id), not to the replica that handed it out, so an
agent may post its result through any replica. Long-polls wait on one `TaskWaker` per app: a
single thread holding one `store.listener(TASKS_CHANNEL, EVENTS_CHANNEL)` (LISTEN/NOTIFY on
PostgreSQL, the in-process hub on SQLite) that wakes the waiting requests of the agent a task was
queued for, and, when an event is appended, every event stream and the webhook deliverer.
Waiters re-read the store at least every `poll_interval` seconds whatever happens, so a task
queued by another process on SQLite, or missed while the listener reconnected, is still found.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from vroot.errors import Conflict, InvalidInput, NotFound, Unavailable
from vroot.server._threads import ServiceThread
from vroot.store import EVENTS_CHANNEL, TASKS_CHANNEL, AgentState, Store, TaskRecord

__all__ = ["TaskService", "TaskWaker", "long_poll"]

log = logging.getLogger("vroot.server")
MAX_KIND = 64
SERVER_KINDS = frozenset({"attest", "deep-quote"})  # queued by the server's own services, with their nonces


class TaskService:
    """Enqueue (operator), lease and finish (agent). Raises only `vroot.errors`."""

    def __init__(self, store: Store, *, lease: timedelta, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._lease = lease.total_seconds()
        self._clock = clock

    def enqueue(self, agent_id: str, *, kind: str, payload: Any, key: str | None = None) -> TaskRecord:
        """Queue a task for an active agent: NotFound for an unknown agent, Conflict for one that is
        not active. With `key`, an open task of the same key is returned instead of a second one.
        InvalidInput for a kind the server queues itself (`SERVER_KINDS`)."""
        if kind in SERVER_KINDS:
            raise InvalidInput(f"{kind} tasks are queued by the server (POST /v1/agents/{{id}}/attestations)")
        agent = self._store.agents.get(agent_id)
        if agent.state is not AgentState.ACTIVE:
            raise Conflict(f"agent {agent_id} is {agent.state.value}; tasks go to active agents only")
        return self._store.tasks.enqueue(agent_id=agent_id, kind=kind, payload=payload, key=key, now=self._clock())

    def lease_one(self, agent_id: str) -> TaskRecord | None:
        """The agent's oldest leasable task, now leased to it, or None."""
        got = self._store.tasks.lease(
            agent_id=agent_id, owner=agent_id, now=self._clock(), lease_seconds=self._lease, limit=1
        )
        return got[0] if got else None

    def own(self, agent_id: str, task_id: int) -> TaskRecord:
        """Task `task_id` if it is `agent_id`'s; NotFound otherwise (no hint that it exists)."""
        try:
            task = self._store.tasks.get(task_id)
        except NotFound:
            task = None
        if task is None or task.agent_id != agent_id:
            raise NotFound(f"agent {agent_id} has no task {task_id}")
        return task

    def finish(self, agent_id: str, task_id: int, *, ok: bool, result: Any) -> TaskRecord:
        """Record the result of a task the agent holds. NotFound if the task is not this agent's (no
        hint that it exists), Conflict if its lease passed to another holder or it is finished."""
        self.own(agent_id, task_id)
        finish = self._store.tasks.complete if ok else self._store.tasks.fail
        return finish(task_id, owner=agent_id, result=result, now=self._clock())


class TaskWaker(ServiceThread):
    """Wakes long-polls when a task is queued for their agent, and event streams and the webhook
    deliverer (`events_appended`) when an event is appended. One thread, one listener per app."""

    thread_name = "vroot-task-waker"

    def __init__(self, store: Store, *, listen_timeout: float = 0.5) -> None:
        super().__init__()
        self._store = store
        self._timeout = listen_timeout
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._event_waiters: set[asyncio.Event] = set()
        self.events_appended = threading.Event()  # set on each event; the webhook thread clears it
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start listening (call from the app's event loop, e.g. in its lifespan)."""
        self._loop = asyncio.get_running_loop()
        super().start()

    def subscribe(self, agent_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(agent_id, set()).add(event)
        return event

    def unsubscribe(self, agent_id: str, event: asyncio.Event) -> None:
        events = self._waiters.get(agent_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waiters[agent_id]

    def subscribe_events(self) -> asyncio.Event:
        event = asyncio.Event()
        self._event_waiters.add(event)
        return event

    def unsubscribe_events(self, event: asyncio.Event) -> None:
        self._event_waiters.discard(event)

    def _wake(self, agent_id: str) -> None:
        for event in self._waiters.get(agent_id, ()):
            event.set()

    def _wake_events(self) -> None:
        for event in self._event_waiters:
            event.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._store.listener(TASKS_CHANNEL, EVENTS_CHANNEL) as listener:
                    while not self._stop.is_set():
                        for note in listener.wait(self._timeout):
                            events = note.channel == EVENTS_CHANNEL
                            if events:
                                self.events_appended.set()
                            if self._loop is not None and not self._loop.is_closed():
                                if events:
                                    self._loop.call_soon_threadsafe(self._wake_events)
                                else:
                                    self._loop.call_soon_threadsafe(self._wake, note.payload)
            except Unavailable as exc:  # waiters keep polling meanwhile
                log.warning("task listener lost (%s); reconnecting", exc)
                self._stop.wait(1.0)
            except RuntimeError:  # the event loop closed under us: the app is shutting down
                return


async def long_poll(
    tasks: TaskService, waker: TaskWaker, agent_id: str, *, wait: float, poll_interval: float,
    still_wanted: Callable[[], Awaitable[bool]] | None = None,
) -> TaskRecord | None:
    """Lease the agent's next task, waiting up to `wait` seconds for one to be queued.

    `still_wanted` is asked before every lease: a long-poll whose client went away, or whose
    credentials were revoked or replaced while it waited, must not take a task it cannot deliver
    (the task would sit leased until its lease expired)."""
    deadline = time.monotonic() + max(wait, 0.0)
    event = waker.subscribe(agent_id)
    try:
        while True:
            event.clear()  # before reading: a task queued after the read sets it again
            if still_wanted is not None and not await still_wanted():
                return None
            task = await run_in_threadpool(tasks.lease_one, agent_id)
            remaining = deadline - time.monotonic()
            if task is not None or remaining <= 0:
                return task
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, poll_interval))
            except TimeoutError:
                pass
    finally:
        waker.unsubscribe(agent_id, event)
