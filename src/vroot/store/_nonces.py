"""Single-use challenge nonces (RA-2).

A nonce is consumed by one conditional UPDATE (`... WHERE used_at IS NULL AND expires_at > now`),
checked by its row count: of any number of concurrent consumers, on either database, exactly one
succeeds. The losers, and every later attempt, learn why it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, update

from vroot.errors import InvalidInput, NonceExpired, NonceReused, NonceUnknown, NotFound
from vroot.store._db import Database
from vroot.store._models import AgentRow, NonceRow
from vroot.store._records import NonceRecord
from vroot.store._types import aware

__all__ = ["NONCE_SIZE", "NonceRepository"]

NONCE_SIZE = 32


def _nonce(row: NonceRow) -> NonceRecord:
    return NonceRecord(
        value=row.value,
        agent_id=row.agent_id,
        purpose=row.purpose,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


class NonceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def issue(
        self, *, agent_id: str, purpose: str, now: datetime, ttl: timedelta, rng: Callable[[int], bytes]
    ) -> bytes:
        """A fresh nonce of 32 bytes from `rng`, bound to `agent_id` and `purpose`, valid until
        `now + ttl`. Raises NotFound for an unknown agent."""
        now = aware(now, "now")
        if ttl <= timedelta(0):
            raise InvalidInput(f"nonce ttl must be positive, got {ttl}")
        if not purpose or len(purpose) > 64:
            raise InvalidInput(f"nonce purpose must be 1..64 characters, got {purpose!r}")
        value = rng(NONCE_SIZE)
        if not isinstance(value, bytes) or len(value) != NONCE_SIZE:
            raise InvalidInput(f"rng({NONCE_SIZE}) must return {NONCE_SIZE} bytes")
        with self._db.write(f"issue nonce to {agent_id}") as s:
            if s.get(AgentRow, agent_id) is None:
                raise NotFound(f"agent {agent_id} does not exist")
            s.add(
                NonceRow(value=value, agent_id=agent_id, purpose=purpose, issued_at=now, expires_at=now + ttl)
            )
        return value

    def consume(self, value: bytes, *, agent_id: str, purpose: str, now: datetime) -> NonceRecord:
        """Mark the nonce used, atomically and once.

        Raises NonceUnknown (never issued, or issued to another agent or for another purpose),
        NonceReused (already consumed, by this call's rival or earlier), NonceExpired (its time to
        live has passed; an expired nonce stays unused).
        Proves: this is the one and only use of a nonce this server issued to `agent_id` for
        `purpose`. Caller must still check that the evidence actually carries this nonce.
        """
        now = aware(now, "now")
        value = bytes(value)
        with self._db.write(f"consume nonce of {agent_id}") as s:
            won = s.execute(
                update(NonceRow)
                .where(
                    NonceRow.value == value,
                    NonceRow.agent_id == agent_id,
                    NonceRow.purpose == purpose,
                    NonceRow.used_at.is_(None),
                    NonceRow.expires_at > now,
                )
                .values(used_at=now),
                execution_options={"synchronize_session": False},
            ).rowcount
            row = s.get(NonceRow, value, populate_existing=True)
            if row is None or row.agent_id != agent_id or row.purpose != purpose:
                raise NonceUnknown(f"no nonce was issued to agent {agent_id} for {purpose}")
            if won == 1:
                return _nonce(row)
            if row.used_at is not None:
                raise NonceReused(
                    f"nonce of agent {agent_id} for {purpose} was already used at {row.used_at}"
                )
            raise NonceExpired(f"nonce of agent {agent_id} for {purpose} expired at {row.expires_at}")

    def find(self, value: bytes) -> NonceRecord | None:
        with self._db.read("read nonce") as s:
            row = s.get(NonceRow, bytes(value))
            return None if row is None else _nonce(row)

    def purge(self, *, before: datetime) -> int:
        """Delete nonces that expired before `before` (used or not); returns how many.

        Caller must keep `before` no later than now: a purged nonce would later read as unknown,
        which still refuses it.
        """
        with self._db.write("purge nonces") as s:
            return s.execute(
                delete(NonceRow).where(NonceRow.expires_at < aware(before, "before")),
                execution_options={"synchronize_session": False},
            ).rowcount
