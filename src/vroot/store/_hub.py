"""In-process notifications for SQLite, where there is no LISTEN/NOTIFY.

SQLite is the one-server-process deployment, so a hub inside the `Store` object reaches every
listener that matters: notifications published by this process after a commit. Writes by another
process (a CLI run against the same file) reach nobody, which is why waiters always re-read the
database after `wait()` returns or times out: polling with a timeout is the fallback.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from vroot.store._records import Notification


class LocalHub:
    """Fan-out of (channel, payload) to the local listeners subscribed to the channel."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[int, tuple[frozenset[str], deque[Notification]]] = {}
        self._next = 0

    def subscribe(self, channels: frozenset[str]) -> int:
        with self._cond:
            self._next += 1
            self._queues[self._next] = (channels, deque())
            return self._next

    def unsubscribe(self, token: int) -> None:
        with self._cond:
            self._queues.pop(token, None)

    def publish(self, channel: str, payload: str) -> None:
        with self._cond:
            for channels, queue in self._queues.values():
                if channel in channels:
                    queue.append(Notification(channel=channel, payload=payload))
            self._cond.notify_all()

    def wait(self, token: int, timeout: float) -> list[Notification]:
        """Every notification queued for `token`, waiting up to `timeout` seconds for the first."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                entry = self._queues.get(token)
                if entry is None:
                    return []
                queue = entry[1]
                if queue:
                    out = list(queue)
                    queue.clear()
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
