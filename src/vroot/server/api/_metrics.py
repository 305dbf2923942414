"""Prometheus text exposition (format 0.0.4), written by hand: request counters kept by this
replica, and gauges read from the store at scrape time (agents by kind and state, agents by the
verdict of their latest result).

Routes are counted by their template (`/v1/agents/{agent_id}/tasks`), never by the raw path, so
a scan of random URLs adds one series ("unmatched"), not one per URL.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from vroot.store import Store, Verdict

__all__ = ["CONTENT_TYPE", "CountRequests", "RequestCounts", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class RequestCounts:
    """Finished HTTP requests by (method, route template, status); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self._counts[(method, route, str(status))] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)


class CountRequests:
    """ASGI middleware adding every finished HTTP request to `counts`."""

    def __init__(self, app: Any, *, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.counts.add(scope.get("method", ""), template, status[0])


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, int]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *(f"{name}{lbl} {v}" for lbl, v in samples)]


def render_metrics(counts: RequestCounts, store: Store) -> str:
    requests = sorted(counts.snapshot().items())
    agents = store.agents.list()
    by_state = Counter((a.kind.value, a.state.value) for a in agents)
    latest = store.results.latest_for(a.id for a in agents)
    verdicts = Counter(r.verdict.value for r in latest.values())
    lines = _family(
        "vroot_http_requests_total", "counter", "HTTP requests served by this replica, by route and status.",
        ((_labels(method=m, route=r, status=s), n) for (m, r, s), n in requests),
    )  # fmt: skip
    lines += _family(
        "vroot_agents", "gauge", "Agents by kind and state.",
        ((_labels(kind=k, state=s), n) for (k, s), n in sorted(by_state.items())),
    )  # fmt: skip
    lines += _family(
        "vroot_latest_verdicts", "gauge", "Agents by the verdict of their latest attestation result.",
        ((_labels(verdict=v.value), verdicts.get(v.value, 0)) for v in Verdict),
    )  # fmt: skip
    return "\n".join(lines) + "\n"
