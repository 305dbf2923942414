"""Attestation results with history (RA-6) and incremental IMA state (issue 4, point 6).

`results.record` stores a result and, in the same transaction, publishes "verdict.changed" when the
verdict differs from the agent's previous one: a result and the event announcing it exist together
or not at all. Concurrent records for one agent are serialized on the agent row, so "previous" is
exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import aliased

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._db import Database
from vroot.store._events import append_event
from vroot.store._models import AgentRow, ImaStateRow, ResultRow
from vroot.store._records import ImaStateRecord, NewResult, RecordedResult, ResultRecord, Verdict
from vroot.store._types import (
    aware,
    banks_from_json,
    banks_to_json,
    check_limit,
    pcrs_from_json,
    pcrs_to_json,
)

__all__ = ["ImaStateRepository", "ResultRepository"]


def _result(row: ResultRow) -> ResultRecord:
    return ResultRecord(
        id=row.id,
        agent_id=row.agent_id,
        verdict=Verdict(row.verdict),
        findings=tuple(row.findings or ()),
        pcrs=pcrs_from_json(row.pcrs),
        evidence_digest=row.evidence_digest,
        clock=row.clock,
        reset_count=row.reset_count,
        restart_count=row.restart_count,
        signed=row.signed,
        created_at=row.created_at,
        host_result_id=row.host_result_id,
    )


class ResultRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, result: NewResult, *, now: datetime) -> RecordedResult:
        """Store `result` as the agent's latest; publish "verdict.changed" (body: result_id, verdict,
        previous) if its verdict differs from the previous result's (or it is the first).

        Raises NotFound for an unknown agent or host result, InvalidInput if `host_result_id` is the
        result of a guest. Does not check the result; the caller appraised it.
        """
        now = aware(now, "now")
        pcrs = pcrs_to_json(result.pcrs)
        with self._db.write(f"record result of {result.agent_id}") as s:
            agent = s.scalars(
                select(AgentRow).where(AgentRow.id == result.agent_id).with_for_update()
            ).one_or_none()
            if agent is None:
                raise NotFound(f"agent {result.agent_id} does not exist")
            if result.host_result_id is not None:
                host_result = s.get(ResultRow, result.host_result_id)
                if host_result is None:
                    raise NotFound(f"host result {result.host_result_id} does not exist")
                host = s.get(AgentRow, host_result.agent_id)
                if host is None or host.kind != "host":
                    raise InvalidInput(f"result {result.host_result_id} is not a host's result")
            previous = s.scalars(
                select(ResultRow.verdict)
                .where(ResultRow.agent_id == result.agent_id)
                .order_by(ResultRow.id.desc())
                .limit(1)
            ).first()
            row = ResultRow(
                agent_id=result.agent_id,
                verdict=result.verdict.value,
                findings=list(result.findings),
                pcrs=pcrs,
                evidence_digest=result.evidence_digest,
                clock=result.clock,
                reset_count=result.reset_count,
                restart_count=result.restart_count,
                signed=result.signed,
                created_at=now,
                host_result_id=result.host_result_id,
            )
            s.add(row)
            s.flush()
            event_id = None
            if previous != result.verdict.value:
                body = {"result_id": row.id, "verdict": result.verdict.value, "previous": previous}
                event_id = append_event(
                    self._db, s, kind="verdict.changed", agent_id=result.agent_id, body=body, now=now
                )
            return RecordedResult(
                result=_result(row),
                previous_verdict=None if previous is None else Verdict(previous),
                event_id=event_id,
            )

    def get(self, result_id: int) -> ResultRecord:
        with self._db.read(f"read result {result_id}") as s:
            row = s.get(ResultRow, result_id)
            if row is None:
                raise NotFound(f"result {result_id} does not exist")
            return _result(row)

    def latest(self, agent_id: str) -> ResultRecord | None:
        """The agent's newest result, or None if it was never attested."""
        history = self.history(agent_id, limit=1)
        return history[0] if history else None

    def latest_for(self, agent_ids: Iterable[str]) -> dict[str, ResultRecord]:
        """The newest result of each agent that has one (e.g. to choose migration destinations)."""
        ids = list(dict.fromkeys(agent_ids))
        if not ids:
            return {}
        newest = (
            select(func.max(ResultRow.id)).where(ResultRow.agent_id.in_(ids)).group_by(ResultRow.agent_id)
        ).scalar_subquery()
        with self._db.read("read latest results") as s:
            return {
                r.agent_id: _result(r) for r in s.scalars(select(ResultRow).where(ResultRow.id.in_(newest)))
            }

    def due(self, *, groups: Iterable[str], cutoff: datetime, guests: bool) -> list[str]:
        """Ids of the active agents of `groups` whose newest result is missing or created at or before
        `cutoff`: every active host, and with `guests` every active guest whose host is active. One
        query that reads only ids and the newest result's time (the continuous-attestation
        scheduler runs it every tick over the whole fleet)."""
        cutoff = aware(cutoff, "cutoff")
        names = list(dict.fromkeys(groups))
        if not names:
            return []
        host = aliased(AgentRow)
        newest = (
            select(ResultRow.created_at)
            .where(ResultRow.agent_id == AgentRow.id)
            .order_by(ResultRow.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        kinds = [AgentRow.kind == "host"]
        if guests:
            active_host = select(host.id).where(host.id == AgentRow.host_id, host.kind == "host", host.state == "active")
            kinds.append(and_(AgentRow.kind == "guest", active_host.exists()))
        query = (
            select(AgentRow.id)
            .where(AgentRow.state == "active", AgentRow.policy_group.in_(names), or_(*kinds))
            .where(or_(newest.is_(None), newest <= cutoff))
            .order_by(AgentRow.id)
        )
        with self._db.read("find agents due for attestation") as s:
            return list(s.scalars(query))

    def history(self, agent_id: str, *, limit: int = 50, before_id: int | None = None) -> list[ResultRecord]:
        """The agent's results, newest first; page with `before_id` (the last id of the previous page)."""
        query = select(ResultRow).where(ResultRow.agent_id == agent_id)
        if before_id is not None:
            query = query.where(ResultRow.id < before_id)
        with self._db.read(f"read results of {agent_id}") as s:
            rows = s.scalars(query.order_by(ResultRow.id.desc()).limit(check_limit(limit)))
            return [_result(r) for r in rows]


def _ima(row: ImaStateRow) -> ImaStateRecord:
    return ImaStateRecord(
        agent_id=row.agent_id,
        entries=row.entries,
        byte_offset=row.byte_offset,
        pcr10=banks_from_json(row.pcr10),
        last_verdict=None if row.last_verdict is None else Verdict(row.last_verdict),
        reset_count=row.reset_count,
        version=row.version,
        updated_at=row.updated_at,
    )


class ImaStateRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, agent_id: str) -> ImaStateRecord | None:
        """The stored state, or None (appraise the IMA log from its first entry)."""
        with self._db.read(f"read IMA state of {agent_id}") as s:
            row = s.get(ImaStateRow, agent_id)
            return None if row is None else _ima(row)

    def put(self, state: ImaStateRecord, *, now: datetime) -> ImaStateRecord:
        """Store `state` if nobody stored another since it was read; returns it with version + 1.

        `state.version` is the version read (0: none was stored). Raises Conflict if the stored version
        differs (another appraisal of the same agent won: re-read and redo), NotFound for an unknown
        agent.
        """
        now = aware(now, "now")
        pcr10 = banks_to_json(state.pcr10)
        verdict = None if state.last_verdict is None else state.last_verdict.value
        with self._db.write(f"store IMA state of {state.agent_id}") as s:
            if state.version == 0:
                if s.get(AgentRow, state.agent_id) is None:
                    raise NotFound(f"agent {state.agent_id} does not exist")
                if s.get(ImaStateRow, state.agent_id) is not None:
                    raise Conflict(f"IMA state of {state.agent_id} already exists; re-read it")
                row = ImaStateRow(
                    agent_id=state.agent_id,
                    entries=state.entries,
                    byte_offset=state.byte_offset,
                    pcr10=pcr10,
                    last_verdict=verdict,
                    reset_count=state.reset_count,
                    version=1,
                    updated_at=now,
                )
                s.add(row)
                s.flush()  # a concurrent first put fails here with Conflict
                return _ima(row)
            changed = s.execute(
                update(ImaStateRow)
                .where(ImaStateRow.agent_id == state.agent_id, ImaStateRow.version == state.version)
                .values(
                    entries=state.entries,
                    byte_offset=state.byte_offset,
                    pcr10=pcr10,
                    last_verdict=verdict,
                    reset_count=state.reset_count,
                    version=state.version + 1,
                    updated_at=now,
                ),
                execution_options={"synchronize_session": False},
            ).rowcount
            if changed == 1:  # what was just written (no read back)
                return dataclasses.replace(state, pcr10=banks_from_json(pcr10), version=state.version + 1,
                                           updated_at=now)  # fmt: skip
            row = s.get(ImaStateRow, state.agent_id, populate_existing=True)
            got = "none" if row is None else row.version
            raise Conflict(f"IMA state of {state.agent_id} is at version {got}, not {state.version}; re-read it")

    def delete(self, agent_id: str) -> bool:
        """Forget the state (the next appraisal starts from the first entry); True if there was one."""
        with self._db.write(f"delete IMA state of {agent_id}") as s:
            return s.execute(delete(ImaStateRow).where(ImaStateRow.agent_id == agent_id)).rowcount == 1
