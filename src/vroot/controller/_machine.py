"""The life of one migration as the controller sees it (MC-F2, MC-F3; DESIGN.md section 6): a
pure state machine. The controller service stores each `Migration` before it acts on it, so a
controller that dies at any step resumes from the store: `tasks_for` says which engine tasks the
current state needs (re-sending one is harmless, engines carry out a task id once), `on_result`
moves the machine when an engine answers, `on_deadline` aborts a migration that stalls before
commit.

    prepare-migration-in  → destination: a target key in its TM, certified by its AK over H(id ‖ nonce)
    migrate-out           → source: lock, export, wrap to that key (the blob)
    import                → destination: import, start locked, prove life
    (commit: the controller's decision, stored)
    finalize-in, finalize-out → destination unlocks, source destroys its copy  → completed

Before commit any failure or stall aborts: abort-in and abort-out (the source unlocks and
resumes) → aborted. After commit the source never resumes: the finalize tasks are sent until both
engines confirm. The checks of each engine's answer are passed in (`Checks`), so this module knows
the order of things and nothing of keys.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vroot.errors import InvalidInput, VrootError

__all__ = ["Checks", "Migration", "MigrationState", "Step", "TaskSpec", "on_deadline", "on_result", "start",
           "target_qualifying_data", "tasks_for"]  # fmt: skip


class MigrationState(StrEnum):
    PREPARING = "preparing"  # waiting for the destination's certified target key
    EXPORTING = "exporting"  # waiting for the source's blob
    IMPORTING = "importing"  # waiting for the destination's import and proof of life
    COMMITTED = "committed"  # decided: finalize both sides
    COMPLETED = "completed"
    ABORTING = "aborting"  # undo both sides
    ABORTED = "aborted"

    @property
    def open(self) -> bool:
        return self not in (MigrationState.COMPLETED, MigrationState.ABORTED)


BEFORE_COMMIT = frozenset({MigrationState.PREPARING, MigrationState.EXPORTING, MigrationState.IMPORTING})
_WAITING = {  # state -> (task kind, which side) the machine waits for
    MigrationState.PREPARING: ("prepare-migration-in", "destination"),
    MigrationState.EXPORTING: ("migrate-out", "source"),
    MigrationState.IMPORTING: ("import", "destination"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step's times, for the migration record (MC-F3)."""

    name: str
    started_at: datetime
    finished_at: datetime | None = None
    detail: str = ""

    @property
    def ms(self) -> float | None:
        return None if self.finished_at is None else (self.finished_at - self.started_at).total_seconds() * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    id: uuid.UUID
    vm_uuid: uuid.UUID
    source: str  # host agent ids
    destination: str
    trigger: str  # "operator", "drain", "policy: ..."
    state: MigrationState
    nonce: bytes
    created_at: datetime
    deadline: datetime  # before commit: abort when passed
    steps: tuple[Step, ...] = ()
    # What both engines must agree on (vroot.migration's ticket: ids, vEK name, nonce, expiry,
    # hosts) and the destination's AK public area from the controller's own records (base64).
    ticket: Mapping[str, Any] = field(default_factory=dict)
    destination_ak_public: str = ""
    target: Mapping[str, Any] | None = None  # the destination's verified target key (public, certify)
    blob: Mapping[str, Any] | None = None  # the source's blob, stored but unreadable to the controller
    proof: Mapping[str, Any] | None = None  # the destination's proof of life
    error: str | None = None
    done_sides: frozenset[str] = frozenset()  # sides that confirmed finalize/abort

    @property
    def waiting_for(self) -> tuple[str, str] | None:
        return _WAITING.get(self.state)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task the controller must have open for an engine (signed by the service when sent)."""

    kind: str
    agent_id: str
    args: Mapping[str, Any]

    @property
    def key(self) -> str:
        """At most one open task per migration, kind and agent (the store enforces it)."""
        return f"mig:{self.args['migration_id']}:{self.kind}"


@dataclass(frozen=True, slots=True)
class Checks:
    """The controller's checks of each engine answer; each raises a VrootError to refuse it and
    returns what is kept in the record."""

    target: Callable[[Migration, Mapping[str, Any]], Mapping[str, Any]] = field(default=lambda m, r: r)
    blob: Callable[[Migration, Mapping[str, Any]], Mapping[str, Any]] = field(default=lambda m, r: r)
    proof: Callable[[Migration, Mapping[str, Any]], Mapping[str, Any]] = field(default=lambda m, r: r)


def target_qualifying_data(migration_id: uuid.UUID, nonce: bytes) -> bytes:
    """H(migration id ‖ nonce): what the destination's AK certifies its target key over (MIG-4)."""
    return hashlib.sha256(migration_id.bytes + nonce).digest()


def start(*, migration_id: uuid.UUID, vm_uuid: uuid.UUID, source: str, destination: str, trigger: str,
          nonce: bytes, now: datetime, timeout: timedelta, vek_name: bytes,
          destination_ak_public: bytes = b"") -> Migration:  # fmt: skip
    """A new migration, waiting for the destination's target key. `vek_name` is the vTM's vEK
    name as the controller enrolled it; engines refuse a vTM whose vEK differs."""
    if source == destination:
        raise InvalidInput("a vTM cannot migrate to the host it is on")
    if len(nonce) < 16:
        raise InvalidInput("the migration nonce must be at least 16 bytes")
    deadline = now + timeout
    ticket = {"migration_id": str(migration_id), "vm_uuid": str(vm_uuid), "vek_name": vek_name.hex(),
              "nonce": nonce.hex(), "expires_at": int(deadline.timestamp()),
              "source_host": source.removeprefix("host:"), "destination_host": destination.removeprefix("host:")}  # fmt: skip
    return Migration(id=migration_id, vm_uuid=vm_uuid, source=source, destination=destination, trigger=trigger,
                     state=MigrationState.PREPARING, nonce=nonce, created_at=now, deadline=deadline,
                     steps=(Step(name="prepare", started_at=now),), ticket=ticket,
                     destination_ak_public=base64.b64encode(destination_ak_public).decode())  # fmt: skip


def _b(migration: Migration) -> dict[str, Any]:
    return {"migration_id": str(migration.id), "vm_uuid": str(migration.vm_uuid)}


def tasks_for(m: Migration) -> list[TaskSpec]:
    """The engine tasks the state `m` is in needs open (none when waiting on nothing)."""
    base = _b(m)
    if m.state is MigrationState.PREPARING:
        return [TaskSpec("prepare-migration-in", m.destination, {**base, "ticket": dict(m.ticket)})]
    if m.state is MigrationState.EXPORTING:
        assert m.target is not None
        return [TaskSpec("migrate-out", m.source, {**base, "ticket": dict(m.ticket), "target": dict(m.target),
                                                   "destination_ak_public": m.destination_ak_public})]  # fmt: skip
    if m.state is MigrationState.IMPORTING:
        assert m.blob is not None
        extra = {"simulated_vm": m.blob["simulated_vm"]} if "simulated_vm" in m.blob else {}
        return [TaskSpec("import", m.destination, {**base, "blob": m.blob["blob"], **extra})]
    if m.state is MigrationState.COMMITTED:
        return [TaskSpec(kind, agent, base) for kind, agent, side in
                (("finalize-in", m.destination, "destination"), ("finalize-out", m.source, "source"))
                if side not in m.done_sides]  # fmt: skip
    if m.state is MigrationState.ABORTING:
        return [TaskSpec(kind, agent, base) for kind, agent, side in
                (("abort-in", m.destination, "destination"), ("abort-out", m.source, "source"))
                if side not in m.done_sides]  # fmt: skip
    return []


def _finish_step(m: Migration, now: datetime, detail: str = "") -> tuple[Step, ...]:
    steps = list(m.steps)
    if steps and steps[-1].finished_at is None:
        steps[-1] = replace(steps[-1], finished_at=now, detail=detail or steps[-1].detail)
    return tuple(steps)


def _next(m: Migration, state: MigrationState, step: str, now: datetime, **changes: Any) -> Migration:
    steps = (*_finish_step(m, now), Step(name=step, started_at=now))
    return replace(m, state=state, steps=steps, **changes)


def _abort(m: Migration, reason: str, now: datetime) -> Migration:
    if m.state not in BEFORE_COMMIT:
        return m  # after commit nothing aborts; aborting and aborted already are
    return _next(m, MigrationState.ABORTING, "abort", now, error=reason, done_sides=frozenset())


def on_result(m: Migration, *, kind: str, agent_id: str, ok: bool, result: Mapping[str, Any], now: datetime,
              checks: Checks) -> Migration:  # fmt: skip
    """`m` after an engine's answer to one of its tasks. An answer the machine is not waiting for
    (a duplicate, a late one, from the wrong engine) changes nothing. A failed task or an answer a
    check refuses aborts a migration before commit."""
    waiting = m.waiting_for
    if waiting is not None:
        want_kind, side = waiting
        want_agent = m.destination if side == "destination" else m.source
        if kind != want_kind or agent_id != want_agent:
            return m
        if not ok:
            return _abort(m, f"{kind} failed on {agent_id}: {result.get('error', 'no reason given')}", now)
        try:
            if m.state is MigrationState.PREPARING:
                return _next(m, MigrationState.EXPORTING, "export", now, target=checks.target(m, result))
            if m.state is MigrationState.EXPORTING:
                return _next(m, MigrationState.IMPORTING, "import", now, blob=checks.blob(m, result))
            proof = checks.proof(m, result)
            return _next(m, MigrationState.COMMITTED, "finalize", now, proof=proof)  # the commit
        except VrootError as exc:
            return _abort(m, f"{kind} from {agent_id} refused: {exc}", now)
    finals = {"finalize-in": ("destination", MigrationState.COMMITTED), "finalize-out": ("source", MigrationState.COMMITTED),
              "abort-in": ("destination", MigrationState.ABORTING), "abort-out": ("source", MigrationState.ABORTING)}  # fmt: skip
    if kind not in finals or finals[kind][1] is not m.state:
        return m
    side = finals[kind][0]
    if agent_id != (m.destination if side == "destination" else m.source) or not ok:
        return m  # a failed finalize or abort is sent again until it is done
    done = m.done_sides | {side}
    if done != {"source", "destination"}:
        return replace(m, done_sides=done)
    final = MigrationState.COMPLETED if m.state is MigrationState.COMMITTED else MigrationState.ABORTED
    return replace(m, state=final, done_sides=done, steps=_finish_step(m, now))


def on_deadline(m: Migration, now: datetime) -> Migration:
    """Abort a migration still before commit at its deadline (a stalled or dead participant)."""
    if m.state in BEFORE_COMMIT and now >= m.deadline:
        step = m.steps[-1].name if m.steps else m.state.value
        return _abort(m, f"timed out in step {step}", now)
    return m
