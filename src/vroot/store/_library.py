"""Baseline documents (versioned by name) and per-group appraisal policies (issue 4, point 5).

The store keeps documents as JSON and never reads them: `vroot.baseline` owns their format and
validates them before they are stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._db import Database
from vroot.store._models import BaselineRow, PolicyRow
from vroot.store._records import BaselineRecord, PolicyRecord
from vroot.store._types import aware

__all__ = ["BaselineRepository", "PolicyRepository"]


def _baseline(row: BaselineRow) -> BaselineRecord:
    return BaselineRecord(
        name=row.name,
        version=row.version,
        group=row.policy_group,
        document=row.document,
        created_at=row.created_at,
    )


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidInput(f"{what} must be 1..255 characters, got {value!r}")
    return value


class BaselineRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, *, name: str, document: Any, now: datetime, group: str | None = None, version: int | None = None
    ) -> BaselineRecord:
        """Store a new version of baseline `name`: `version` if given (Conflict if it exists), else one
        more than the newest. Versions are never overwritten."""
        _name(name, "baseline name")
        if version is not None and version < 1:
            raise InvalidInput(f"baseline version must be >= 1, got {version}")
        with self._db.write(f"add baseline {name}") as s:
            if version is None:
                version = (
                    s.scalar(select(func.max(BaselineRow.version)).where(BaselineRow.name == name)) or 0
                ) + 1
            elif s.scalars(
                select(BaselineRow).where(BaselineRow.name == name, BaselineRow.version == version)
            ).first():
                raise Conflict(f"baseline {name} version {version} already exists")
            row = BaselineRow(
                name=name,
                version=version,
                policy_group=group,
                document=document,
                created_at=aware(now, "now"),
            )
            s.add(row)
            s.flush()  # two concurrent adds of one version: the second fails here with Conflict
            return _baseline(row)

    def get(self, name: str, version: int | None = None) -> BaselineRecord:
        """Version `version` of baseline `name`, or its newest; raises NotFound."""
        query = select(BaselineRow).where(BaselineRow.name == name)
        query = query.where(BaselineRow.version == version) if version is not None else query
        with self._db.read(f"read baseline {name}") as s:
            row = s.scalars(query.order_by(BaselineRow.version.desc()).limit(1)).first()
            if row is None:
                which = "" if version is None else f" version {version}"
                raise NotFound(f"baseline {name}{which} does not exist")
            return _baseline(row)

    def newest_version(self, name: str) -> int:
        """The newest version of baseline `name` (its number only: no manifest is read); NotFound."""
        query = select(func.max(BaselineRow.version)).where(BaselineRow.name == name)
        with self._db.read(f"read newest version of baseline {name}") as s:
            version = s.scalar(query)
        if version is None:
            raise NotFound(f"baseline {name} does not exist")
        return int(version)

    def list(
        self, *, group: str | None = None, name: str | None = None, latest: bool = False
    ) -> list[BaselineRecord]:
        """Baselines by name and version; with `latest`, only the newest version of each name."""
        query = select(BaselineRow)
        if group is not None:
            query = query.where(BaselineRow.policy_group == group)
        if name is not None:
            query = query.where(BaselineRow.name == name)
        if latest:
            newest_per_name = (
                select(BaselineRow.name, func.max(BaselineRow.version).label("v"))
                .group_by(BaselineRow.name)
                .subquery()
            )
            query = query.join(
                newest_per_name,
                (newest_per_name.c.name == BaselineRow.name) & (newest_per_name.c.v == BaselineRow.version),
            )
        with self._db.read("list baselines") as s:
            return [_baseline(r) for r in s.scalars(query.order_by(BaselineRow.name, BaselineRow.version))]

    def delete(self, name: str, version: int) -> None:
        with self._db.write(f"delete baseline {name}") as s:
            done = s.execute(
                delete(BaselineRow).where(BaselineRow.name == name, BaselineRow.version == version)
            ).rowcount
            if done != 1:
                raise NotFound(f"baseline {name} version {version} does not exist")


def _policy(row: PolicyRow) -> PolicyRecord:
    return PolicyRecord(
        group=row.policy_group, document=row.document, version=row.version, updated_at=row.updated_at
    )


class PolicyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, group: str, document: Any, *, expected_version: int, now: datetime) -> PolicyRecord:
        """Create (`expected_version` 0) or replace (the version read) the policy of `group`; the
        stored version becomes one more. Raises Conflict if someone changed it since it was read."""
        _name(group, "policy group")
        now = aware(now, "now")
        with self._db.write(f"store policy of {group}") as s:
            if expected_version == 0:
                if s.get(PolicyRow, group) is not None:
                    raise Conflict(f"policy of group {group} already exists; re-read it")
                row = PolicyRow(policy_group=group, document=document, version=1, updated_at=now)
                s.add(row)
                s.flush()
                return _policy(row)
            changed = s.execute(
                update(PolicyRow)
                .where(PolicyRow.policy_group == group, PolicyRow.version == expected_version)
                .values(document=document, version=expected_version + 1, updated_at=now),
                execution_options={"synchronize_session": False},
            ).rowcount
            row = s.get(PolicyRow, group, populate_existing=True)
            if row is None:
                raise NotFound(f"no policy for group {group}")
            if changed != 1:
                raise Conflict(f"policy of group {group} is at version {row.version}, not {expected_version}")
            return _policy(row)

    def get(self, group: str) -> PolicyRecord:
        policy = self.find(group)
        if policy is None:
            raise NotFound(f"no policy for group {group}")
        return policy

    def find(self, group: str) -> PolicyRecord | None:
        with self._db.read(f"read policy of {group}") as s:
            row = s.get(PolicyRow, group)
            return None if row is None else _policy(row)

    def list(self) -> list[PolicyRecord]:
        with self._db.read("list policies") as s:
            return [_policy(r) for r in s.scalars(select(PolicyRow).order_by(PolicyRow.policy_group))]

    def delete(self, group: str) -> None:
        with self._db.write(f"delete policy of {group}") as s:
            if s.execute(delete(PolicyRow).where(PolicyRow.policy_group == group)).rowcount != 1:
                raise NotFound(f"no policy for group {group}")
