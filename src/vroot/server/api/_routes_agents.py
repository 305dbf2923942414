"""Agents: the operator's view (list, show, revoke, enqueue) and the agent protocol (long-poll for a
task, post its result; DESIGN.md section 5), which needs the agent's client certificate."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from vroot.server._attest import ATTEST
from vroot.server._deep import DEEP_QUOTE
from vroot.server._migrations import MIGRATION_KINDS
from vroot.server._tasks import long_poll
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors, operator_dependency
from vroot.server.api._schemas import (
    AGENT_ID_PATTERN,
    AgentList,
    AgentOut,
    NextTask,
    ResultIn,
    RevokeIn,
    TaskIn,
    TaskOut,
)
from vroot.store import AgentKind, AgentRecord, AgentState

__all__ = ["MAX_WAIT", "agent_routes"]

MAX_WAIT = 600.0
AgentId = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="e.g. host:host-a")]
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def agent_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    store = ctx.services.store
    operator = operator_dependency(ctx)
    as_operator = [Depends(operator)]

    def agent_certificate(request: Request, agent_id: AgentId) -> AgentRecord:
        tls = (request.scope.get("extensions") or {}).get("tls") or {}
        return ctx.authenticator.authenticate(tuple(tls.get("client_cert_chain") or ()), agent_id=agent_id)

    @router.get("/v1/agents", response_model=AgentList, dependencies=as_operator, tags=["operator"],
                responses=errors(401, 422, 503))  # fmt: skip
    def list_agents(kind: AgentKind | None = None, state: AgentState | None = None) -> AgentList:
        """Every agent, by id (operator)."""
        return AgentList(agents=[AgentOut.of(a) for a in store.agents.list(kind=kind, state=state)])

    @router.get("/v1/agents/{agent_id}", response_model=AgentOut, dependencies=as_operator, tags=["operator"],
                responses=errors(401, 404, 422, 503))  # fmt: skip
    def get_agent(agent_id: AgentId) -> AgentOut:
        return AgentOut.of(store.agents.get(agent_id))

    @router.post("/v1/agents/{agent_id}/revoke", response_model=AgentOut, dependencies=as_operator,
                 tags=["operator"], responses=errors(401, 404, 409, 422, 503))  # fmt: skip
    def revoke(body: RevokeIn, agent_id: AgentId) -> AgentOut:
        """Revoke an agent: its client and AK certificate serials join the revocations (refused from
        the next request on, on every replica), its enrollment in progress is dropped, its state is
        revoked, and an "untrusted" result saying so is recorded (its verdict changes at once)."""
        return AgentOut.of(ctx.attestations.revoke(agent_id, reason=body.reason))

    @router.post("/v1/agents/{agent_id}/tasks", response_model=TaskOut, status_code=201,
                 dependencies=as_operator, tags=["operator"],
                 responses=errors(400, 401, 404, 409, 422, 503))  # fmt: skip
    def enqueue(body: TaskIn, agent_id: AgentId) -> TaskOut:
        """Queue a task for an active agent (operator); wakes its long-poll. `attest` tasks come from
        POST /v1/agents/{agent_id}/attestations, which gives them their nonce."""
        return TaskOut.of(ctx.tasks.enqueue(agent_id, kind=body.kind, payload=body.payload, key=body.key))

    @router.get("/v1/agents/{agent_id}/tasks", response_model=NextTask, tags=["agent"],
                responses=errors(401, 403, 422, 503))  # fmt: skip
    async def next_task(
        request: Request,
        agent: Annotated[AgentRecord, Depends(agent_certificate)],
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for a task (capped by the server)")] = 0.0,
    ) -> NextTask:
        """Lease the agent's next task (at most one), waiting up to `wait` seconds for one (agent).
        A wait whose client disconnected, or whose certificate was revoked or replaced meanwhile,
        takes no task."""
        wait = min(wait, ctx.settings.max_wait_seconds)
        polls = 0

        async def still_wanted() -> bool:
            nonlocal polls
            polls += 1
            if await request.is_disconnected():  # gone while it waited (in the thread pool's queue, too)
                return False
            if polls == 1:
                return True  # just authenticated
            now = await run_in_threadpool(store.agents.find, agent.id)
            return now is not None and now.state is AgentState.ACTIVE and now.client_serial == agent.client_serial

        task = await long_poll(ctx.tasks, ctx.waker, agent.id, wait=wait,
                               poll_interval=ctx.settings.poll_interval_seconds, still_wanted=still_wanted)  # fmt: skip
        return NextTask(task=None if task is None else TaskOut.of(task))

    @router.post("/v1/agents/{agent_id}/tasks/{task_id}/result", response_model=TaskOut, tags=["agent"],
                 responses=errors(400, 401, 403, 404, 409, 422, 503))  # fmt: skip
    def post_result(
        body: ResultIn, task_id: TaskId, agent: Annotated[AgentRecord, Depends(agent_certificate)]
    ) -> TaskOut:
        """Finish a task the agent holds, as done or failed (agent). An `attest` task's result is the
        evidence ({"evidence": ...}): a host's is verified, appraised and recorded (RA-5, RA-6), and
        the task keeps only {"result_id", "verdict"}; a guest's is verified and waits, at most
        `deep_batch_seconds`, for the other VMs of its host, then for its host's answer to ONE
        `deep-quote` task for all of them, which records every joint verdict (RA-3, RA-4)."""
        ok = body.status == "done"
        kind = ctx.tasks.own(agent.id, task_id).kind
        if kind == ATTEST and agent.kind is AgentKind.GUEST:
            return TaskOut.of(ctx.deep.accept_vm(agent.id, task_id, ok=ok, result=body.result))
        if kind == ATTEST:
            return TaskOut.of(ctx.attestations.accept(agent.id, task_id, ok=ok, result=body.result)[0])
        if kind == DEEP_QUOTE:
            return TaskOut.of(ctx.deep.accept_host(agent.id, task_id, ok=ok, result=body.result))
        if kind in MIGRATION_KINDS:  # an engine's answer moves its migration on (MC-F3)
            return TaskOut.of(ctx.migrations.accept(agent.id, ctx.tasks.own(agent.id, task_id), ok=ok,
                                                    result=body.result))  # fmt: skip
        return TaskOut.of(ctx.tasks.finish(agent.id, task_id, ok=ok, result=body.result))

    return router
