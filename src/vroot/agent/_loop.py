"""`TaskLoop`: an agent's main loop (DESIGN.md section 5). It long-polls the server for its next
task, runs the handler registered for the task's kind, and posts the result: done with the
handler's return value (JSON), or failed with the error's class and one-line diagnostics.

The loop never opens a port; a server that does not answer is retried with a capped backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vroot.agent._client import ServerClient
from vroot.errors import Conflict, Unavailable, VerificationError, VrootError

__all__ = ["Task", "TaskHandler", "TaskLoop"]

log = logging.getLogger("vroot.agent")


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A task as the server handed it out (leased to this agent). `payload` is unverified JSON."""

    id: int
    kind: str
    payload: Any
    attempts: int

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Task:
        return cls(id=int(doc["id"]), kind=str(doc["kind"]), payload=doc.get("payload"),
                   attempts=int(doc.get("attempts", 0)))  # fmt: skip


TaskHandler = Callable[[Task], Any]


class TaskLoop:
    """Polls `client` for `agent_id`'s tasks and dispatches them to `handlers` by kind."""

    def __init__(
        self,
        client: ServerClient,
        agent_id: str,
        handlers: Mapping[str, TaskHandler],
        *,
        wait: float = 25.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._client = client
        self._agent_id = agent_id
        self._handlers = dict(handlers)
        self._wait = wait
        self._max_backoff = max_backoff

    def run_once(self, *, wait: float | None = None) -> Task | None:
        """Wait for one task, handle it, post its result; the task, or None if none came."""
        doc = self._client.next_task(self._agent_id, wait=self._wait if wait is None else wait)
        if doc is None:
            return None
        task = Task.from_json(doc)
        handler = self._handlers.get(task.kind)
        ok, result = True, None
        if handler is None:
            ok, result = False, {"error": "NotFound", "detail": f"this agent has no handler for {task.kind!r} tasks"}
        else:
            try:
                result = handler(task)
            except VrootError as exc:
                ok, result = False, {"error": type(exc).__name__, "detail": exc.diagnostics()}
            except Exception as exc:  # a handler bug must not stop the agent  # noqa: BLE001
                log.exception("handler for %s task %d failed", task.kind, task.id)
                ok, result = False, {"error": type(exc).__name__, "detail": "the agent's handler failed"}
        try:
            self._client.post_result(self._agent_id, task.id, ok=ok, result=result)
        except Conflict as exc:  # the lease expired and the task went elsewhere: drop this result
            log.warning("result of task %d not taken: %s", task.id, exc.diagnostics())
        return task

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set (checked between polls, so at most one wait later), or until the
        server refuses this agent's credentials (revoked, or replaced by a new enrollment): then it
        logs why and returns, since asking again cannot help."""
        backoff = 1.0
        while not stop.is_set():
            try:
                self.run_once()
                backoff = 1.0
            except VerificationError as exc:
                log.error("the server refuses %s (%s); its task loop stops", self._agent_id, exc.diagnostics())
                return
            except (Unavailable, VrootError) as exc:
                log.warning("server unavailable (%s); retrying in %.0f s", exc.diagnostics(), backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
