"""The one shape of the server's background threads (the waker, the scheduler, the webhook
deliverer): started in the app's lifespan, stopped at its shutdown, never at import."""

from __future__ import annotations

import threading

__all__ = ["ServiceThread"]


class ServiceThread:
    """A daemon thread running `_run()` until `stop()`; `_run` checks (or waits on) `self._stop`."""

    thread_name = "vroot-service"
    join_timeout = 10.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._stopping()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            self._thread = None

    def _stopping(self) -> None:
        """Wake `_run` if it waits on something other than `self._stop`."""

    def _run(self) -> None:
        raise NotImplementedError
