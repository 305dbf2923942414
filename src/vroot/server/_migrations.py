"""The migration controller in `vroot server` (issue 5; MC-F1..F3, MC-S3, MC-S4; DESIGN.md
section 6): decides, chooses a destination from the RA server's verdicts, instructs the engines
with signed tasks, listens for their answers, and publishes every change.

    svc = MigrationService(services, keys=controller_keys, rules=rules, checks=checks)
    record = svc.request(vm_uuid, to="host:b")      # or to=None: the best destination
    svc.drain("host:a")                             # every VM of host:a, each to its best host
    svc.accept(agent_id, task, ok=True, result=...) # an engine's answer (from the task endpoint)
    svc.tick()                                      # deadlines, lost tasks, evacuation rules

Each migration lives in the store (`store.migrations`) and is written before the controller acts
on it; the tasks its state needs are queued with a key (one open task per migration and kind), so
`tick` after any crash queues exactly what is missing. Engines get, in each task's payload, a JWS
the controller's key signed (`vroot.controller.sign_migration_task`) and that key's certificate
from the operations CA; they act on the signed arguments only.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vroot.controller import (
    Checks,
    ControllerKeys,
    HostView,
    Migration,
    MigrationRules,
    MigrationState,
    Placement,
    Step,
    choose_destination,
    hosts_to_evacuate,
    on_deadline,
    on_result,
    plan_evacuation,
    sign_migration_task,
    start,
    tasks_for,
)
from vroot.errors import Conflict, InvalidInput, NotFound, VrootError
from vroot.pki._jws import unb64url
from vroot.server._services import Services
from vroot.server._threads import ServiceThread
from vroot.store import AgentKind, AgentState, TaskRecord, TaskState
from vroot.store._migrations import MigrationRecord, Rehome
from vroot.tpm2 import parse_public

__all__ = ["DRAIN_LABEL", "MIGRATION_KINDS", "DrainResult", "MigrationService", "MigrationTicker", "NoDestination",
           "migration_json"]

log = logging.getLogger("vroot.server")
DRAIN_LABEL = "vroot.draining"  # a host label: "true" while an operator drains it
MIGRATION_KINDS = frozenset({"prepare-migration-in", "migrate-out", "import", "finalize-in", "finalize-out",
                             "abort-in", "abort-out"})  # fmt: skip
RETRIES = 5
OPEN_TASKS_LISTED = 10_000  # the store's largest listing


class NoDestination(Conflict):
    """No host qualifies as a destination; the message says why each was refused."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    host: str
    migrations: tuple[uuid.UUID, ...]
    stranded: tuple[tuple[str, str], ...]  # (VM, why no host takes it)


def _to_record(m: Migration, *, version: int, updated_at: datetime) -> MigrationRecord:
    body = {
        "steps": [_step_json(s) for s in m.steps],
        "ticket": dict(m.ticket),
        "destination_ak_public": m.destination_ak_public,
        "target": dict(m.target) if m.target is not None else None,
        "blob": dict(m.blob) if m.blob is not None else None,
        "proof": dict(m.proof) if m.proof is not None else None,
        "done_sides": sorted(m.done_sides),
    }
    return MigrationRecord(id=m.id, vm_uuid=m.vm_uuid, source=m.source, destination=m.destination, trigger=m.trigger,
                           state=m.state.value, nonce=m.nonce, created_at=m.created_at, updated_at=updated_at,
                           deadline=m.deadline, version=version, error=m.error, body=body)  # fmt: skip


def _from_record(r: MigrationRecord) -> Migration:
    b = r.body
    steps = tuple(Step(name=s["name"], started_at=datetime.fromisoformat(s["started_at"]),
                       finished_at=datetime.fromisoformat(s["finished_at"]) if s.get("finished_at") else None,
                       detail=s.get("detail", "")) for s in b.get("steps", []))  # fmt: skip
    return Migration(id=r.id, vm_uuid=r.vm_uuid, source=r.source, destination=r.destination, trigger=r.trigger,
                     state=MigrationState(r.state), nonce=r.nonce, created_at=r.created_at, deadline=r.deadline,
                     steps=steps, ticket=b.get("ticket") or {}, destination_ak_public=b.get("destination_ak_public", ""),
                     target=b.get("target"), blob=b.get("blob"), proof=b.get("proof"), error=r.error,
                     done_sides=frozenset(b.get("done_sides", ())))  # fmt: skip


def _step_json(s: Step) -> dict[str, Any]:
    return {"name": s.name, "started_at": s.started_at.isoformat(),
            "finished_at": s.finished_at.isoformat() if s.finished_at else None, "detail": s.detail}  # fmt: skip


def migration_json(r: MigrationRecord) -> dict[str, Any]:
    """A migration record for the API and events: every step's times; never the blob's bytes."""
    return {
        "id": str(r.id), "vm_uuid": str(r.vm_uuid), "source": r.source, "destination": r.destination,
        "trigger": r.trigger, "state": r.state, "error": r.error, "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(), "deadline": r.deadline.isoformat(),
        "steps": [{**_step_json(s), "ms": None if s.ms is None else round(s.ms, 3)} for s in _from_record(r).steps],
    }  # fmt: skip


class MigrationService:
    def __init__(self, services: Services, *, keys: ControllerKeys, rules: MigrationRules, checks: Checks,
                 timeout: timedelta = timedelta(seconds=60), task_ttl: timedelta = timedelta(seconds=120),
                 on_change: Callable[[MigrationRecord], None] | None = None) -> None:  # fmt: skip
        self._s = services
        self._store = services.store
        self._keys = keys
        self.rules = rules
        self._checks = checks
        self._timeout = timeout
        self._ttl = task_ttl
        self._on_change = on_change

    # -- the fleet as the controller sees it --------------------------------------------------------

    def fleet(self) -> dict[str, HostView]:
        """Every host with what placement needs: state, labels, zone, capacity (0: no limit), the
        vTMs on it (guests there plus migrations heading there), and its latest verdict."""
        store = self._store
        hosts = store.agents.list(kind=AgentKind.HOST)
        guests = store.agents.list(kind=AgentKind.GUEST)
        latest = store.results.latest_for([h.id for h in hosts])
        vtms = Counter(g.host_id for g in guests if g.state is not AgentState.REVOKED)
        vtms.update(r.destination for r in store.migrations.list(open_only=True, limit=1000))  # heading there
        out = {}
        for h in hosts:
            result = latest.get(h.id)
            out[h.id] = HostView(
                agent_id=h.id, active=h.state is AgentState.ACTIVE, draining=h.labels.get(DRAIN_LABEL) == "true",
                zone=h.zone, labels=dict(h.labels), capacity=h.capacity or None,
                vtms=vtms[h.id],
                verdict=result.verdict.value if result else None, verdict_at=result.created_at if result else None,
                result_id=result.id if result else None, baseline=_baseline_of(result.signed if result else None),
            )  # fmt: skip
        return out

    def placement(self, vm_uuid: uuid.UUID, *, to: str | None = None) -> tuple[str, Placement]:
        """The VM's host and where it could go now (a dry run of `request`)."""
        guest = self._guest(vm_uuid)
        fleet = self.fleet()
        if guest.host_id not in fleet:
            raise Conflict(f"VM {vm_uuid} is on no known host")
        return guest.host_id, choose_destination(source=fleet[guest.host_id], hosts=fleet.values(), rules=self.rules,
                                                 now=self._s.clock(), to=to)  # fmt: skip

    def _guest(self, vm_uuid: uuid.UUID) -> Any:
        agent = self._store.agents.find(f"vm:{vm_uuid}")
        if agent is None or agent.kind is not AgentKind.GUEST:
            raise NotFound(f"VM {vm_uuid} is not enrolled")
        if agent.state is not AgentState.ACTIVE or agent.host_id is None:
            raise Conflict(f"VM {vm_uuid} is {agent.state.value} and cannot migrate")
        return agent

    # -- decisions (MC-F1) ---------------------------------------------------------------------------

    def request(self, vm_uuid: uuid.UUID, *, to: str | None = None, trigger: str = "operator") -> MigrationRecord:
        """Start moving the VM's vTM to `to` (or the best host). NoDestination with every host's
        refusal when none qualifies; Conflict when the VM is already migrating."""
        source, placement = self.placement(vm_uuid, to=to)
        if placement.destination is None:
            raise NoDestination(f"VM {vm_uuid}: {placement.explain()}")
        return self._start(self._guest(vm_uuid), source=source, destination=placement.destination, trigger=trigger)

    def _start(self, guest: Any, *, source: str, destination: str, trigger: str) -> MigrationRecord:
        """Record a migration the placement rules chose and queue its first task."""
        now = self._s.clock()
        vm_uuid = uuid.UUID(guest.vm_uuid)
        m = start(migration_id=uuid.UUID(bytes=self._s.rng(16), version=4), vm_uuid=vm_uuid, source=source,
                  destination=destination, trigger=trigger, nonce=self._s.rng(32), now=now, timeout=self._timeout,
                  vek_name=parse_public(guest.ek_public).name(),
                  destination_ak_public=self._store.agents.get(destination).ak_public or b"")  # fmt: skip
        record = self._store.migrations.add(_to_record(m, version=1, updated_at=now))
        self._published(record, None)
        self._queue(m)
        return record

    def drain(self, host: str) -> DrainResult:
        """Mark `host` draining (no migration goes there) and move each of its VMs to its best host."""
        agent = self._store.agents.get(host)
        if agent.kind is not AgentKind.HOST:
            raise InvalidInput(f"{host} is not a host")
        self._store.agents.update(host, labels={**agent.labels, DRAIN_LABEL: "true"})
        return self._evacuate(host, trigger=f"drain {host}")

    def undrain(self, host: str) -> None:
        agent = self._store.agents.get(host)
        self._store.agents.update(host, labels={k: v for k, v in agent.labels.items() if k != DRAIN_LABEL})

    def _evacuate(self, host: str, *, trigger: str) -> DrainResult:
        """Every active VM of `host` not already migrating, placed in one pass over the fleet
        (`plan_evacuation`: each move counts against its destination's room)."""
        busy = {r.vm_uuid for r in self._store.migrations.list(open_only=True, limit=1000)}
        guests = {uuid.UUID(g.vm_uuid): g for g in self._store.agents.list(kind=AgentKind.GUEST, host_id=host,
                                                                            state=AgentState.ACTIVE)}  # fmt: skip
        leaving = [vm for vm in guests if vm not in busy]
        fleet = self.fleet()
        if host not in fleet:
            raise NotFound(f"host {host} is not known")
        plan = plan_evacuation([str(vm) for vm in leaving], source=fleet[host], hosts=fleet.values(), rules=self.rules,
                               now=self._s.clock())  # fmt: skip
        started, stranded = [], []
        for vm, placement in plan.moves:
            if placement.destination is None:
                stranded.append((vm, f"VM {vm}: {placement.explain()}"))
                continue
            try:
                record = self._start(guests[uuid.UUID(vm)], source=host, destination=placement.destination,
                                     trigger=trigger)  # fmt: skip
            except Conflict as exc:  # it started migrating meanwhile
                stranded.append((vm, str(exc)))
                continue
            started.append(record.id)
        return DrainResult(host=host, migrations=tuple(started), stranded=tuple(stranded))

    # -- engines' answers (MC-F3) -------------------------------------------------------------------

    def accept(self, agent_id: str, task: TaskRecord, *, ok: bool, result: Any) -> TaskRecord:
        """Record an engine's answer to a migration task and move its migration on."""
        finish = self._store.tasks.complete if ok else self._store.tasks.fail
        payload = task.payload if isinstance(task.payload, Mapping) else {}
        try:
            migration_id = uuid.UUID(str(payload.get("migration_id")))
        except ValueError:
            return finish(task.id, owner=agent_id, result={"error": "not a migration task"}, now=self._s.clock())
        done = finish(task.id, owner=agent_id, result=_summary(result), now=self._s.clock())
        body = result if isinstance(result, Mapping) else {"error": "the result is not an object"}
        self._update(migration_id, lambda m, now: on_result(m, kind=task.kind, agent_id=agent_id, ok=ok, result=body,
                                                             now=now, checks=self._checks))  # fmt: skip
        return done

    def tick(self) -> None:
        """Deadlines before commit, tasks missing for open migrations (after a crash or a failed
        finalize), and the policy's evacuations (hosts under a retired baseline)."""
        open_keys = self._open_task_keys()  # taken before the records are read
        for record in self._store.migrations.list(open_only=True, limit=1000):
            listed = _from_record(record)
            if (open_keys is not None and on_deadline(listed, self._s.clock()) == listed
                    and all(spec.key in open_keys for spec in tasks_for(listed))):  # fmt: skip
                continue  # not due, every task it needs open; a later state's tasks are queued by accept
            m = self._update(record.id, lambda m, now: on_deadline(m, now))
            if m is not None:
                self._queue(m)
        if self.rules.retired_baselines:
            for host, reason in hosts_to_evacuate(self.fleet().values(), self.rules):
                self._evacuate(host, trigger=f"policy: {reason}")

    def get(self, migration_id: uuid.UUID) -> MigrationRecord:
        return self._store.migrations.get(migration_id)

    def _open_task_keys(self) -> set[str] | None:
        """The keys of every open (queued or leased) migration task, or None if there may be more
        than one listing holds (then `tick` looks at each migration as if none were open)."""
        keys: set[str] = set()
        for state in (TaskState.QUEUED, TaskState.LEASED):
            tasks = self._store.tasks.list(state=state, limit=OPEN_TASKS_LISTED)
            if len(tasks) >= OPEN_TASKS_LISTED:
                return None
            keys.update(t.key for t in tasks if t.key and t.key.startswith("mig:"))
        return keys

    # -- internals ----------------------------------------------------------------------------------

    def _update(self, migration_id: uuid.UUID, step: Callable[[Migration, datetime], Migration]) -> Migration | None:
        for _ in range(RETRIES):
            record = self._store.migrations.get(migration_id)
            before = _from_record(record)
            now = self._s.clock()
            after = step(before, now)
            if after == before:
                return before
            committed_now = after.state is MigrationState.COMMITTED and before.state is not MigrationState.COMMITTED
            try:
                stored = self._store.migrations.update(
                    migration_id, expected_version=record.version, state=after.state.value,
                    body=_to_record(after, version=0, updated_at=now).body, error=after.error, now=now,
                    rehome=self._rehome(after) if committed_now else None)  # fmt: skip
            except Conflict:
                continue  # another replica moved it: read again
            self._published(stored, before.state)
            self._queue(after)  # first: the engine's next step starts while the scan below runs
            if after.state is not before.state:
                self._cancel_unneeded(after)
            return after
        raise Conflict(f"migration {migration_id} keeps changing; try again")

    @staticmethod
    def _rehome(m: Migration) -> Rehome:
        """At commit the destination holds the vTM: the guest's record follows it (so its joint
        verdicts name the new host) with the vEK certificate the destination issued (MIG-10)."""
        certificate = (m.proof or {}).get("vek_certificate")
        der = base64.b64decode(certificate) if isinstance(certificate, str) else None
        return Rehome(agent_id=f"vm:{m.vm_uuid}", host_id=m.destination, ek_certificate=der)

    def _cancel_unneeded(self, m: Migration) -> None:
        """Withdraw the migration's queued tasks its new state no longer needs (a `prepare` still
        queued for an engine that was away when the migration aborted, say)."""
        wanted = {spec.key for spec in tasks_for(m)}
        prefix = f"mig:{m.id}:"
        for agent in {m.source, m.destination}:
            for task in self._store.tasks.list(agent_id=agent, state=TaskState.QUEUED, limit=1000):
                if task.key and task.key.startswith(prefix) and task.key not in wanted:
                    try:
                        self._store.tasks.cancel(task.id, reason=f"migration {m.id} is {m.state.value}",
                                                 now=self._s.clock())  # fmt: skip
                    except Conflict:
                        pass  # leased meanwhile: its answer will be ignored

    def _queue(self, m: Migration) -> None:
        now = self._s.clock()
        for spec in tasks_for(m):
            token = sign_migration_task(kind=spec.kind, migration_id=m.id, agent_id=spec.agent_id, task_id=spec.key,
                                        args=spec.args, now=now, ttl=self._ttl, key=self._keys.key)  # fmt: skip
            payload = {"migration_id": str(m.id), "signed": token, "controller_certificate": self._keys.certificate_pem}
            try:
                self._store.tasks.enqueue(agent_id=spec.agent_id, kind=spec.kind, payload=payload, key=spec.key, now=now)
            except (Conflict, NotFound) as exc:  # an agent revoked or gone: the deadline will abort
                log.warning("migration %s: cannot queue %s for %s: %s", m.id, spec.kind, spec.agent_id, exc)

    def _published(self, record: MigrationRecord, before: MigrationState | None) -> None:
        kind = "migration.requested" if before is None else f"migration.{record.state}"
        self._store.events.append(kind, agent_id=f"vm:{record.vm_uuid}", body=migration_json(record), now=self._s.clock())
        if self._on_change is not None:
            self._on_change(record)


def _summary(result: Any) -> Any:
    """What a finished migration task keeps: not the blob (the migration record has it)."""
    if isinstance(result, Mapping):
        return {k: ("<stored in the migration>" if k == "blob" else v) for k, v in result.items()}
    return result


def _baseline_of(signed: str | None) -> tuple[str, int] | None:
    """(name, version) of the baseline an EAR's policy id names ("group@v/baseline@v")."""
    if not signed:
        return None
    try:
        claims = json.loads(unb64url(signed.split(".")[1], "EAR payload"))  # our own signed result
        (sub,) = claims["submods"].values()
        _, _, baseline = sub["ear.appraisal-policy-id"].partition("/")
        name, _, version = baseline.rpartition("@")
        return (name, int(version)) if name else None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, InvalidInput):
        return None



class MigrationTicker(ServiceThread):
    """Runs `MigrationService.tick` every `tick_seconds` (deadlines, lost tasks, policy evacuations)."""

    thread_name = "vroot-migrations"

    def __init__(self, service: MigrationService, *, tick_seconds: float) -> None:
        super().__init__()
        self._service = service
        self._tick = tick_seconds

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self._service.tick()
            except VrootError as exc:  # a database hiccup: the next tick tries again
                log.warning("migration controller tick failed: %s", exc.diagnostics())
