"""Continuous attestation (RA-6): every active host, and every active guest (VM) on an active host,
whose group has a policy is attested at least every `attestation_interval` (the server setting;
the policy manifest has no interval field yet). The VMs of one host are asked in the same tick, so
their answers come together and share one host deep quote (`_deep`).

A thread wakes every `scheduler_interval_seconds` and asks the store which hosts are due: active
hosts of a group with a policy whose latest result is missing or older than the interval (one
query that reads ids only, `results.due`). For each, spaced evenly over most of the tick so that a
tick's hosts do not all answer at once, it calls `Attestations.request`, which queues an `attest` task under the task key "attest": with
several replicas running schedulers on one database, the key keeps one open attestation per agent
(a second replica's request returns the open task), and a task a dead replica handed out is handed
out again when its lease expires. Nothing the schedule depends on lives in one replica's memory;
the only memory here (which agents this replica asked for lately) just saves nonces: an agent
that is due but still has its task open is not asked again until an interval has passed.

Once per interval the scheduler also deletes nonces that expired more than an hour ago (a purged
nonce that comes back reads as unknown, and is still refused). Every tick it also gives up on
deep quotes their hosts did not take in time (`DeepAttestations.expire`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from vroot.errors import Conflict, NotFound, Unavailable, VrootError
from vroot.server._attest import Attestations
from vroot.server._deep import DeepAttestations
from vroot.server._guests import GUEST_PREFIX
from vroot.server._threads import ServiceThread
from vroot.store import Store

__all__ = ["Scheduler"]

log = logging.getLogger("vroot.server")
NONCE_GRACE = timedelta(hours=1)
SPREAD = 0.8  # share of a tick over which the thread spaces the hosts' requests


class Scheduler(ServiceThread):
    """Queues attestations of due hosts; `tick()` once, or `start()` a thread that ticks."""

    thread_name = "vroot-scheduler"

    def __init__(self, store: Store, attestations: Attestations, *, interval: timedelta, tick_seconds: float,
                 clock: Callable[[], datetime], deep: DeepAttestations | None = None) -> None:  # fmt: skip
        super().__init__()
        self._store = store
        self._attestations = attestations
        self._deep = deep
        self._interval = interval
        self._tick = tick_seconds
        self._clock = clock
        self._asked: dict[str, float] = {}  # agent id -> monotonic time this replica last asked
        self._last_purge = 0.0

    def due(self) -> list[str]:
        """Active hosts, and guests on active hosts, with a policy whose latest result is missing or
        older than the interval (guests only when deep attestation is wired in)."""
        groups = {p.group for p in self._store.policies.list()}
        if not groups:
            return []
        return self._store.results.due(groups=groups, cutoff=self._clock() - self._interval,
                                       guests=self._deep is not None)  # fmt: skip

    def tick(self, *, spread: float = 0.0) -> list[str]:
        """Request an attestation of every due host not asked for lately; the agents asked. With
        `spread` seconds, the hosts' requests are spaced evenly over that time (the thread ticks so),
        so that the hosts due in one tick do not all answer, and are all judged, at the same
        moment; guests come after them, all at once (a host's VMs share one deep quote)."""
        now = time.monotonic()
        wait = self._interval.total_seconds()
        asked = []
        due = [a for a in self.due() if now - self._asked.get(a, -wait) >= wait]
        hosts = sum(1 for a in due if not a.startswith(GUEST_PREFIX))
        gap = spread / hosts if spread > 0 and hosts > 1 else 0.0
        for i, agent_id in enumerate(due):
            if gap and i and not agent_id.startswith(GUEST_PREFIX) and self._stop.wait(gap):
                break
            try:
                if agent_id.startswith(GUEST_PREFIX) and self._deep is not None:
                    self._deep.request(agent_id)
                else:
                    self._attestations.request(agent_id)
            except (Conflict, NotFound) as exc:  # revoked or deleted meanwhile
                log.info("not attesting %s: %s", agent_id, exc.diagnostics())
                continue
            self._asked[agent_id] = now
            asked.append(agent_id)
        for agent_id in [a for a, t in self._asked.items() if now - t >= wait]:
            del self._asked[agent_id]
        if self._deep is not None:
            self._deep.expire()
        if now - self._last_purge >= wait:
            self._last_purge = now
            self._store.nonces.purge(before=self._clock() - NONCE_GRACE)
        return asked

    def start(self) -> None:
        """Tick every `tick_seconds` in a thread (not at all when it is 0)."""
        if self._tick > 0:
            super().start()

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            next_tick = time.monotonic() + self._tick
            try:
                self.tick(spread=self._tick * SPREAD)
            except Unavailable as exc:
                log.warning("scheduler: database unavailable (%s)", exc.diagnostics())
            except VrootError as exc:
                log.error("scheduler: %s", exc.diagnostics())
