"""Agents (hosts and guests), their enrollments in progress, and revocations (RA-1, issue 4 point 4).

Each method is one transaction. The store keeps what the PCA decided; it checks no certificate and
no signature itself: callers must verify EK/AK material before storing it and must consult
`revocations` (or the agent's state) before trusting a certificate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vroot.errors import Conflict, InvalidInput, NonceExpired, NotFound, Revoked
from vroot.store._db import Database
from vroot.store._events import append_event
from vroot.store._models import AgentRow, EnrollmentRow, RevocationRow
from vroot.store._records import (
    AgentKind,
    AgentRecord,
    AgentState,
    EnrollmentRecord,
    RevocationRecord,
)
from vroot.store._types import aware, serial_int, serial_text

__all__ = ["KEEP", "AgentRepository", "EnrollmentRepository", "RevocationRepository"]


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # "leave this field as it is" in AgentRepository.update


# Fields with the same name and meaning on AgentRecord and AgentRow.
_SAME = (
    "id",
    "host_id",
    "vm_uuid",
    "zone",
    "capacity",
    "ek_certificate",
    "ek_public",
    "ak_public",
    "ak_certificate",
    "vtm_manager_public",
    "vtm_manager_certify_info",
    "vtm_manager_certify_signature",
    "created_at",
    "enrolled_at",
    "revoked_at",
)


def _agent(row: AgentRow) -> AgentRecord:
    return AgentRecord(
        **{name: getattr(row, name) for name in _SAME},
        kind=AgentKind(row.kind),
        group=row.policy_group,
        labels=dict(row.labels or {}),
        client_serial=None if row.client_serial is None else serial_int(row.client_serial),
        state=AgentState(row.state),
    )


def _row(agent: AgentRecord) -> AgentRow:
    return AgentRow(
        **{name: getattr(agent, name) for name in _SAME},
        kind=agent.kind.value,
        policy_group=agent.group,
        labels=dict(agent.labels),
        client_serial=None if agent.client_serial is None else serial_text(agent.client_serial),
        state=agent.state.value,
    )


def _load(s: Session, agent_id: str, *, lock: bool = False) -> AgentRow:
    query = select(AgentRow).where(AgentRow.id == agent_id)
    row = s.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"agent {agent_id} does not exist")
    return row


def _check_host(s: Session, host_id: str) -> None:
    host = s.get(AgentRow, host_id)
    if host is None:
        raise NotFound(f"host agent {host_id} does not exist")
    if host.kind != AgentKind.HOST:
        raise InvalidInput(f"{host_id} is a {host.kind} agent, not a host")


def _revoke_serial(s: Session, serial: int, *, agent_id: str | None, reason: str, now: datetime) -> bool:
    """Insert a revocation unless the serial is already revoked; True if inserted."""
    text = serial_text(serial)
    if s.get(RevocationRow, text) is not None:
        return False
    s.add(RevocationRow(serial=text, agent_id=agent_id, reason=reason, revoked_at=now))
    s.flush()
    return True


class AgentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, agent: AgentRecord) -> AgentRecord:
        """Store a new agent. Raises Conflict if its id, vm_uuid or client serial is taken, NotFound
        if a guest's host_id names no agent, InvalidInput if it names a guest."""
        with self._db.write(f"add agent {agent.id}") as s:
            if agent.host_id is not None:
                _check_host(s, agent.host_id)
            if s.get(AgentRow, agent.id) is not None:
                raise Conflict(f"agent {agent.id} already exists")
            row = _row(agent)
            s.add(row)
            s.flush()
            return _agent(row)

    def get(self, agent_id: str) -> AgentRecord:
        """The agent; raises NotFound."""
        with self._db.read(f"read agent {agent_id}") as s:
            return _agent(_load(s, agent_id))

    def find(self, agent_id: str) -> AgentRecord | None:
        with self._db.read(f"read agent {agent_id}") as s:
            row = s.get(AgentRow, agent_id)
            return None if row is None else _agent(row)

    def by_client_serial(self, serial: int) -> AgentRecord | None:
        """The agent whose client certificate has `serial` (TLS client authentication).

        Caller must still check the agent's state: a revoked agent is returned with state revoked.
        """
        with self._db.read("read agent by serial") as s:
            row = s.scalars(
                select(AgentRow).where(AgentRow.client_serial == serial_text(serial))
            ).one_or_none()
            return None if row is None else _agent(row)

    def by_client_certificate(self, serial: int) -> tuple[AgentRecord | None, bool]:
        """(`by_client_serial(serial)`, whether `serial` is revoked), read in one transaction (every
        agent request asks both). Caller must still check the agent's state and id."""
        key = serial_text(serial)
        with self._db.read("read agent by serial") as s:
            revoked = s.get(RevocationRow, key) is not None
            row = s.scalars(select(AgentRow).where(AgentRow.client_serial == key)).one_or_none()
            return (None if row is None else _agent(row)), revoked

    def list(
        self,
        *,
        kind: AgentKind | str | None = None,
        state: AgentState | str | None = None,
        host_id: str | None = None,
        group: str | None = None,
    ) -> list[AgentRecord]:
        """Agents matching every given filter, by id."""
        query = select(AgentRow).order_by(AgentRow.id)
        if kind is not None:
            query = query.where(AgentRow.kind == AgentKind(kind).value)
        if state is not None:
            query = query.where(AgentRow.state == AgentState(state).value)
        if host_id is not None:
            query = query.where(AgentRow.host_id == host_id)
        if group is not None:
            query = query.where(AgentRow.policy_group == group)
        with self._db.read("list agents") as s:
            return [_agent(r) for r in s.scalars(query)]

    def activate(
        self, agent_id: str, *, ak_public: bytes, ak_certificate: bytes, client_serial: int, now: datetime
    ) -> AgentRecord:
        """Finish enrollment after a successful credential activation (RA-1): the agent becomes active
        with this AK, AK certificate and client certificate serial, and "agent.enrolled" is published.

        Re-enrollment of an active agent swaps its AK in the same transaction, and the client
        certificate serial it replaces is revoked ("superseded"). Raises Revoked for a revoked agent.
        Caller must have checked the activated secret (`enrollments.take`) before calling.
        """
        now = aware(now, "now")
        with self._db.write(f"activate agent {agent_id}") as s:
            row = _load(s, agent_id, lock=True)
            if row.state == AgentState.REVOKED:
                raise Revoked(f"agent {agent_id} is revoked; it cannot enroll again")
            new_serial = serial_text(client_serial)
            if row.client_serial is not None and row.client_serial != new_serial:
                _revoke_serial(
                    s, serial_int(row.client_serial), agent_id=agent_id, reason="superseded", now=now
                )
            row.ak_public = ak_public
            row.ak_certificate = ak_certificate
            row.client_serial = new_serial
            row.state = AgentState.ACTIVE.value
            row.enrolled_at = now
            s.flush()
            append_event(self._db, s, kind="agent.enrolled", agent_id=agent_id, body={}, now=now)
            return _agent(row)

    def update(
        self, agent_id: str, *, group: Any = KEEP, labels: Any = KEEP, zone: Any = KEEP, capacity: Any = KEEP
    ) -> AgentRecord:
        """Change placement attributes (policy group, labels, zone, capacity); KEEP leaves one as is."""
        with self._db.write(f"update agent {agent_id}") as s:
            row = _load(s, agent_id, lock=True)
            if group is not KEEP:
                row.policy_group = group
            if labels is not KEEP:
                row.labels = dict(labels)
            if zone is not KEEP:
                row.zone = zone
            if capacity is not KEEP:
                row.capacity = capacity
            record = _agent(row)  # validates the new values before they are written
            s.flush()
            return record

    def move(self, agent_id: str, *, host_id: str, now: datetime) -> AgentRecord:
        """Record that guest `agent_id` now runs on host `host_id` (after a migration), publishing
        "agent.moved" with the old and new host."""
        with self._db.write(f"move agent {agent_id}") as s:
            row = _load(s, agent_id, lock=True)
            if row.kind != AgentKind.GUEST:
                raise InvalidInput(f"agent {agent_id} is a host; only guests move")
            _check_host(s, host_id)
            old, row.host_id = row.host_id, host_id
            s.flush()
            body = {"from": old, "to": host_id}
            append_event(self._db, s, kind="agent.moved", agent_id=agent_id, body=body, now=now)
            return _agent(row)

    def set_vtm_manager(
        self, agent_id: str, *, public: bytes, certify_info: bytes, certify_signature: bytes
    ) -> AgentRecord:
        """Store a host's vTM-manager key and its TPM2_Certify by the host AK.

        Caller (the PCA) must have verified the certification against the host's AK first.
        """
        with self._db.write(f"set vTM manager of {agent_id}") as s:
            row = _load(s, agent_id, lock=True)
            if row.kind != AgentKind.HOST:
                raise InvalidInput(f"agent {agent_id} is a guest; only hosts have a vTM manager")
            if row.state == AgentState.REVOKED:
                raise Revoked(f"agent {agent_id} is revoked")
            row.vtm_manager_public = public
            row.vtm_manager_certify_info = certify_info
            row.vtm_manager_certify_signature = certify_signature
            s.flush()
            return _agent(row)

    def revoke(
        self, agent_id: str, *, reason: str, now: datetime, serials: tuple[int, ...] = ()
    ) -> AgentRecord:
        """Revoke an agent, all at once: state revoked, its client certificate serial and `serials`
        (e.g. its AK certificate's) added to the revocations, any enrollment in progress dropped, and
        "agent.revoked" published. Raises Conflict if it is already revoked."""
        now = aware(now, "now")
        with self._db.write(f"revoke agent {agent_id}") as s:
            row = _load(s, agent_id, lock=True)
            if row.state == AgentState.REVOKED:
                raise Conflict(f"agent {agent_id} is already revoked")
            all_serials = list(serials)
            if row.client_serial is not None:
                all_serials.append(serial_int(row.client_serial))
            for serial in dict.fromkeys(all_serials):
                _revoke_serial(s, serial, agent_id=agent_id, reason=reason, now=now)
            row.state = AgentState.REVOKED.value
            row.revoked_at = now
            s.execute(delete(EnrollmentRow).where(EnrollmentRow.agent_id == agent_id))
            s.flush()
            append_event(
                self._db, s, kind="agent.revoked", agent_id=agent_id, body={"reason": reason}, now=now
            )
            return _agent(row)

    def delete(self, agent_id: str) -> None:
        """Delete an agent with its nonces, tasks, results, IMA state and enrollment (revocations and
        events stay). Guests that ran on it keep no host (host_id becomes None)."""
        with self._db.write(f"delete agent {agent_id}") as s:
            if s.execute(delete(AgentRow).where(AgentRow.id == agent_id)).rowcount != 1:
                raise NotFound(f"agent {agent_id} does not exist")


def _enrollment(row: Any) -> EnrollmentRecord:
    return EnrollmentRecord(
        agent_id=row.agent_id,
        ak_public=row.ak_public,
        secret_digest=row.secret_digest,
        credential_blob=row.credential_blob,
        encrypted_secret=row.encrypted_secret,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


class EnrollmentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def begin(self, challenge: EnrollmentRecord) -> EnrollmentRecord:
        """Store a credential-activation challenge, replacing any earlier one of the same agent.

        Raises NotFound if the agent does not exist (add it first, state enrolling), Revoked if it is
        revoked.
        """
        if aware(challenge.expires_at, "expires_at") <= aware(challenge.created_at, "created_at"):
            raise InvalidInput("an enrollment challenge must expire after it is created")
        with self._db.write(f"begin enrollment of {challenge.agent_id}") as s:
            agent = _load(s, challenge.agent_id, lock=True)
            if agent.state == AgentState.REVOKED:
                raise Revoked(f"agent {challenge.agent_id} is revoked")
            s.execute(delete(EnrollmentRow).where(EnrollmentRow.agent_id == challenge.agent_id))
            row = EnrollmentRow(
                agent_id=challenge.agent_id,
                ak_public=challenge.ak_public,
                secret_digest=challenge.secret_digest,
                credential_blob=challenge.credential_blob,
                encrypted_secret=challenge.encrypted_secret,
                created_at=challenge.created_at,
                expires_at=challenge.expires_at,
            )
            s.add(row)
            s.flush()
            return _enrollment(row)

    def find(self, agent_id: str) -> EnrollmentRecord | None:
        """The challenge in progress (e.g. to resend it), or None."""
        with self._db.read(f"read enrollment of {agent_id}") as s:
            row = s.get(EnrollmentRow, agent_id)
            return None if row is None else _enrollment(row)

    def take(self, agent_id: str, *, now: datetime) -> EnrollmentRecord:
        """Remove and return the agent's challenge: single use, atomic (one of many concurrent
        callers gets it). Raises NotFound if there is none (never begun, or already taken) and
        NonceExpired if it had expired (it is removed all the same).

        Caller must compare the activated secret with `secret_digest` in constant time.
        """
        now = aware(now, "now")
        with self._db.write(f"take enrollment of {agent_id}") as s:
            table = EnrollmentRow.__table__
            row = s.execute(
                delete(table).where(table.c.agent_id == agent_id).returning(*table.c)
            ).one_or_none()
        if row is None:
            raise NotFound(f"no enrollment in progress for agent {agent_id}")
        record = _enrollment(row)
        if record.expires_at <= now:
            raise NonceExpired(f"enrollment challenge of agent {agent_id} expired at {record.expires_at}")
        return record


def _revocation(row: RevocationRow) -> RevocationRecord:
    return RevocationRecord(
        serial=serial_int(row.serial), agent_id=row.agent_id, reason=row.reason, revoked_at=row.revoked_at
    )


class RevocationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, serial: int, *, reason: str, now: datetime, agent_id: str | None = None
    ) -> RevocationRecord:
        """Revoke one certificate serial; raises Conflict if it is already revoked."""
        now = aware(now, "now")
        with self._db.write("revoke certificate") as s:
            if not _revoke_serial(s, serial, agent_id=agent_id, reason=reason, now=now):
                raise Conflict(f"certificate serial {serial:x} is already revoked")
            row = s.get(RevocationRow, serial_text(serial))
            assert row is not None
            return _revocation(row)

    def find(self, serial: int) -> RevocationRecord | None:
        with self._db.read("read revocation") as s:
            row = s.get(RevocationRow, serial_text(serial))
            return None if row is None else _revocation(row)

    def is_revoked(self, serial: int) -> bool:
        return self.find(serial) is not None

    def list(self, *, since: datetime | None = None) -> list[RevocationRecord]:
        """Every revocation (for a CRL), oldest first; only those at or after `since` if given."""
        query = select(RevocationRow).order_by(RevocationRow.revoked_at, RevocationRow.serial)
        if since is not None:
            query = query.where(RevocationRow.revoked_at >= aware(since, "since"))
        with self._db.read("list revocations") as s:
            return [_revocation(r) for r in s.scalars(query)]
