"""Persistence of the cloud-OS layer: agents, nonces, tasks, results, baselines, events.

    from vroot.store import Store, NewResult, upgrade

    with Store.open("sqlite:///var/lib/vroot/state.db") as store:   # or postgresql://host/db
        store.migrate()
        nonce = store.nonces.issue(agent_id="host:h1", purpose="attest", now=now,
                                   ttl=timedelta(minutes=2), rng=os.urandom)
        store.nonces.consume(nonce, agent_id="host:h1", purpose="attest", now=now)  # once only
        task = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=now, key="attest")
        [leased] = store.tasks.lease(agent_id="host:h1", owner="replica-a", now=now, lease_seconds=60)
        store.tasks.complete(leased.id, owner="replica-a", result={"ok": True}, now=now)
        store.results.record(NewResult(agent_id="host:h1", verdict=Verdict.TRUSTED), now=now)
        store.events.since(0)                  # [EventRecord(kind="verdict.changed", ...)]

Repositories: `agents`, `enrollments`, `revocations`, `nonces`, `tasks`, `results`, `ima_state`,
`baselines`, `policies`, `events`, `webhooks`. Each method is one transaction, takes and returns
frozen records (ORM rows never leave this package), and raises only `vroot.errors`: Conflict for a
duplicate or a lost optimistic race, NotFound, InvalidInput, Unavailable when the database does not
answer, and the NonceInvalid family from `nonces.consume`. Time (`now=`, timezone-aware) and
randomness (`rng=`) are always passed in.

SQLite is the zero-set-up default (one file, one server process); PostgreSQL lets several server
replicas share the work: tasks are leased with FOR UPDATE SKIP LOCKED and long-polls are woken by
LISTEN/NOTIFY (`store.listener(TASKS_CHANNEL)`; on SQLite only within the process, so waiters poll).
Schema changes are Alembic migrations inside this package (`migrations/versions/`); a new one is
made with `alembic revision` against `migrations/` using `make_revision(url, message)`.
"""

from vroot.store._agents import KEEP
from vroot.store._migrate import current_revision, downgrade, head_revision, make_revision, upgrade
from vroot.store._nonces import NONCE_SIZE
from vroot.store._notify import EVENTS_CHANNEL, TASKS_CHANNEL, Listener
from vroot.store._records import (
    AgentKind,
    AgentRecord,
    AgentState,
    BaselineRecord,
    EnrollmentRecord,
    EventRecord,
    ImaStateRecord,
    NewResult,
    NonceRecord,
    Notification,
    PolicyRecord,
    RecordedResult,
    ResultRecord,
    RevocationRecord,
    TaskRecord,
    TaskState,
    Verdict,
    WebhookRecord,
)
from vroot.store._store import Store

__all__ = [
    "EVENTS_CHANNEL",
    "KEEP",
    "NONCE_SIZE",
    "TASKS_CHANNEL",
    "AgentKind",
    "AgentRecord",
    "AgentState",
    "BaselineRecord",
    "EnrollmentRecord",
    "EventRecord",
    "ImaStateRecord",
    "Listener",
    "NewResult",
    "NonceRecord",
    "Notification",
    "PolicyRecord",
    "RecordedResult",
    "ResultRecord",
    "RevocationRecord",
    "Store",
    "TaskRecord",
    "TaskState",
    "Verdict",
    "WebhookRecord",
    "current_revision",
    "downgrade",
    "head_revision",
    "make_revision",
    "upgrade",
]
