"""Task queue for agents: enqueue, lease, renew, complete (DESIGN.md sections 5 and 7).

Leasing picks the oldest leasable tasks: queued ones, and leased ones whose lease has expired (so a
replica that dies mid-task loses nothing: its leases run out and the task is handed out again).
On PostgreSQL the candidates are read with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent
leasers (threads or replicas) take disjoint tasks without waiting for each other; on SQLite the
whole lease runs in one `BEGIN IMMEDIATE` transaction, which no other writer can interleave with,
once a plain read has seen a leasable task (most long-polls find none, and need no write lock).
A task whose lease expired `max_attempts` times is failed instead of leased again (a task that
kills every replica that runs it does not loop for ever).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, or_, select, update
from sqlalchemy.orm import Session

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._db import Database, notify_after_commit
from vroot.store._models import AgentRow, NonceRow, TaskRow
from vroot.store._nonces import NONCE_SIZE
from vroot.store._notify import TASKS_CHANNEL
from vroot.store._records import TaskRecord, TaskState
from vroot.store._types import aware, check_limit

__all__ = ["TaskRepository"]

# Tasks that finish work a migration already started go before the rest, oldest first within each
# group: a destination imports (and unlocks) the vTMs already locked for it before it prepares for
# more, so a vTM's lock does not wait behind a drain's queue of prepare tasks.
FIRST_KINDS = ("import", "finalize-in", "finalize-out", "abort-in", "abort-out")
_FIRST = case((TaskRow.kind.in_(FIRST_KINDS), 0), else_=1)

_OPEN = (TaskState.QUEUED.value, TaskState.LEASED.value)


def _task(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        agent_id=row.agent_id,
        kind=row.kind,
        key=row.key,
        payload=row.payload,
        state=TaskState(row.state),
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        created_at=row.created_at,
        finished_at=row.finished_at,
        result=row.result,
    )


def _check_task(kind: str, max_attempts: int) -> None:
    if not kind or len(kind) > 64:
        raise InvalidInput(f"task kind must be 1..64 characters, got {kind!r}")
    if max_attempts < 1:
        raise InvalidInput(f"max_attempts must be >= 1, got {max_attempts}")


class TaskRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def enqueue(
        self,
        *,
        agent_id: str,
        kind: str,
        payload: Any,
        now: datetime,
        key: str | None = None,
        max_attempts: int = 5,
    ) -> TaskRecord:
        """Queue a task for `agent_id` and wake its long-poll (TASKS_CHANNEL) at commit.

        With `key`, at most one open (queued or leased) task per agent and key exists: if one does,
        it is returned unchanged and nothing is queued. Raises NotFound for an unknown agent.
        """
        now = aware(now, "now")
        _check_task(kind, max_attempts)
        with self._db.write(f"enqueue {kind} for {agent_id}") as s:
            return self._add(s, agent_id=agent_id, kind=kind, key=key, payload=payload, now=now,
                             max_attempts=max_attempts)  # fmt: skip

    def enqueue_challenge(
        self,
        *,
        agent_id: str,
        kind: str,
        key: str,
        nonce: bytes,
        purpose: str,
        expires_at: datetime,
        payload: Any,
        now: datetime,
        max_attempts: int = 5,
    ) -> TaskRecord:
        """`enqueue` of a task that carries a single-use nonce, with the nonce issued in the same
        transaction (one commit instead of two): the nonce `nonce` (bound to `agent_id` and
        `purpose`, valid until `expires_at`) is stored only if the task is, so when an open task of
        `key` is returned instead, no nonce is left behind. Raises NotFound for an unknown agent,
        InvalidInput for a bad nonce or kind."""
        now = aware(now, "now")
        expires_at = aware(expires_at, "expires_at")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise InvalidInput(f"a nonce is {NONCE_SIZE} bytes")
        if not purpose or len(purpose) > 64:
            raise InvalidInput(f"nonce purpose must be 1..64 characters, got {purpose!r}")
        if expires_at <= now:
            raise InvalidInput("the nonce must expire after it is issued")
        _check_task(kind, max_attempts)
        nonce_row = NonceRow(value=nonce, agent_id=agent_id, purpose=purpose, issued_at=now, expires_at=expires_at)
        with self._db.write(f"enqueue {kind} with its nonce for {agent_id}") as s:
            return self._add(s, agent_id=agent_id, kind=kind, key=key, payload=payload, now=now,
                             max_attempts=max_attempts, with_row=nonce_row)  # fmt: skip

    @classmethod
    def _add(cls, s: Session, *, agent_id: str, kind: str, key: str | None, payload: Any, now: datetime,
             max_attempts: int, with_row: Any = None) -> TaskRecord:  # fmt: skip
        """In `s`: the open task of `key` if there is one (nothing added), else a new queued task (and
        `with_row` beside it), its agent's long-poll woken at commit. NotFound for an unknown agent."""
        if s.get(AgentRow, agent_id) is None:
            raise NotFound(f"agent {agent_id} does not exist")
        if key is not None and (existing := cls._open_with_key(s, agent_id, key)) is not None:
            return _task(existing)
        if with_row is not None:
            s.add(with_row)
        row = TaskRow(agent_id=agent_id, kind=kind, key=key, payload=payload, state=TaskState.QUEUED.value,
                      attempts=0, max_attempts=max_attempts, created_at=now)  # fmt: skip
        s.add(row)
        s.flush()  # a concurrent enqueue with the same key fails here (Conflict) on PostgreSQL
        notify_after_commit(s, TASKS_CHANNEL, agent_id)
        return _task(row)

    @staticmethod
    def _open_with_key(s: Session, agent_id: str, key: str) -> TaskRow | None:
        query = select(TaskRow).where(
            TaskRow.agent_id == agent_id, TaskRow.key == key, TaskRow.state.in_(_OPEN)
        )
        return s.scalars(query).first()

    def get(self, task_id: int) -> TaskRecord:
        with self._db.read(f"read task {task_id}") as s:
            row = s.get(TaskRow, task_id)
            if row is None:
                raise NotFound(f"task {task_id} does not exist")
            return _task(row)

    def list(
        self, *, agent_id: str | None = None, state: TaskState | str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Tasks, oldest first, optionally of one agent and/or in one state."""
        query = select(TaskRow).order_by(TaskRow.id).limit(check_limit(limit))
        if agent_id is not None:
            query = query.where(TaskRow.agent_id == agent_id)
        if state is not None:
            query = query.where(TaskRow.state == TaskState(state).value)
        with self._db.read("list tasks") as s:
            return [_task(r) for r in s.scalars(query)]

    def lease(
        self, *, agent_id: str | None, owner: str, now: datetime, lease_seconds: float, limit: int = 1
    ) -> list[TaskRecord]:
        """Lease up to `limit` of the oldest leasable tasks of `agent_id` (of any agent if None) to
        `owner` until `now + lease_seconds`; each lease counts one attempt.

        Guarantees: no task is held by two unexpired leases; concurrent callers never get the same task.
        Caller must `complete`/`fail` (or `renew`) before the lease runs out, else it may run twice.
        """
        now = aware(now, "now")
        if not owner:
            raise InvalidInput("lease owner must not be empty")
        if lease_seconds <= 0:
            raise InvalidInput(f"lease_seconds must be positive, got {lease_seconds}")
        check_limit(limit)
        until = now + timedelta(seconds=lease_seconds)
        leasable = or_(
            TaskRow.state == TaskState.QUEUED.value,
            and_(TaskRow.state == TaskState.LEASED.value, TaskRow.lease_until <= now),
        )
        query = select(TaskRow).where(leasable)
        if agent_id is not None:
            query = query.where(TaskRow.agent_id == agent_id)
        leased: list[TaskRecord] = []
        if not self._db.is_postgresql:  # most long-polls find nothing: ask before taking the write lock
            open_tasks = select(TaskRow.id).where(TaskRow.state.in_(_OPEN))
            if agent_id is not None:
                open_tasks = open_tasks.where(TaskRow.agent_id == agent_id)
            with self._db.read(f"look for tasks of {agent_id or 'any agent'}") as s:
                if s.execute(open_tasks.limit(1)).first() is None:  # nothing queued, nothing leased
                    return leased
        with self._db.write(f"lease tasks of {agent_id or 'any agent'}") as s:
            while len(leased) < limit:
                batch = s.scalars(
                    query.order_by(_FIRST, TaskRow.id).limit(limit - len(leased)).with_for_update(skip_locked=True)
                ).all()
                if not batch:
                    break
                for row in batch:
                    if row.attempts >= row.max_attempts:  # an expired lease with no attempt left
                        row.state = TaskState.FAILED.value
                        row.finished_at = now
                        row.lease_until = None
                        row.result = {"error": f"lease expired after {row.attempts} attempts"}
                        continue
                    row.state = TaskState.LEASED.value
                    row.lease_owner = owner
                    row.lease_until = until
                    row.attempts += 1
                    leased.append(_task(row))
                s.flush()
        return leased

    def renew(self, task_id: int, *, owner: str, now: datetime, lease_seconds: float) -> TaskRecord:
        """Extend `owner`'s lease to `now + lease_seconds`; Conflict if `owner` no longer holds it."""
        now = aware(now, "now")
        if lease_seconds <= 0:
            raise InvalidInput(f"lease_seconds must be positive, got {lease_seconds}")
        return self._transition(
            task_id, owner=owner, values={"lease_until": now + timedelta(seconds=lease_seconds)}
        )

    def complete(self, task_id: int, *, owner: str, result: Any, now: datetime) -> TaskRecord:
        """Mark the task done with `result`. Raises Conflict if `owner` does not hold the lease (it
        was leased again by someone else after expiring, or finished already), NotFound if no task.

        A holder whose lease expired may still complete while nobody else has leased the task.
        """
        return self._finish(task_id, TaskState.DONE, owner=owner, result=result, now=now)

    def fail(self, task_id: int, *, owner: str, result: Any, now: datetime) -> TaskRecord:
        """Mark the task failed with `result` (e.g. an error description); same rules as `complete`."""
        return self._finish(task_id, TaskState.FAILED, owner=owner, result=result, now=now)

    def _finish(
        self, task_id: int, state: TaskState, *, owner: str, result: Any, now: datetime
    ) -> TaskRecord:
        values = {
            "state": state.value,
            "result": result,
            "finished_at": aware(now, "now"),
            "lease_until": None,
        }
        return self._transition(task_id, owner=owner, values=values)

    def _transition(self, task_id: int, *, owner: str, values: dict[str, Any]) -> TaskRecord:
        held = (TaskRow.state == TaskState.LEASED.value, TaskRow.lease_owner == owner)
        return self._update_if(
            task_id, held, values, lambda row: f"leased to {row.lease_owner or 'nobody'}, not {owner}"
        )

    def cancel(self, task_id: int, *, reason: str, now: datetime) -> TaskRecord:
        """Fail an open task on the operator's behalf (whoever holds it); Conflict if it is finished."""
        values = {
            "state": TaskState.FAILED.value,
            "result": {"error": f"cancelled: {reason}"},
            "finished_at": aware(now, "now"),
            "lease_until": None,
        }
        return self._update_if(task_id, (TaskRow.state.in_(_OPEN),), values, lambda row: "already finished")

    def _update_if(
        self,
        task_id: int,
        conditions: tuple[ColumnElement[bool], ...],
        values: dict[str, Any],
        why: Callable[[TaskRow], str],
    ) -> TaskRecord:
        """Update the task only if `conditions` hold (one conditional UPDATE, so races have one
        winner); NotFound if there is no such task, Conflict (saying `why`) if they did not hold."""
        with self._db.write(f"update task {task_id}") as s:
            changed = s.execute(
                update(TaskRow).where(TaskRow.id == task_id, *conditions).values(**values),
                execution_options={"synchronize_session": False},
            ).rowcount
            row = s.get(TaskRow, task_id, populate_existing=True)
            if row is None:
                raise NotFound(f"task {task_id} does not exist")
            if changed != 1:
                raise Conflict(f"task {task_id} is {row.state}: {why(row)}")
            return _task(row)

    def purge(self, *, finished_before: datetime) -> int:
        """Delete done and failed tasks finished before `finished_before`; returns how many."""
        with self._db.write("purge tasks") as s:
            return s.execute(
                delete(TaskRow).where(
                    TaskRow.state.not_in(_OPEN),
                    TaskRow.finished_at < aware(finished_before, "finished_before"),
                ),
                execution_options={"synchronize_session": False},
            ).rowcount
