"""Host and VM attestation (RA-2..RA-6): trigger one, follow it, read results; the result-signing
public key for relying parties that verify EARs offline. A VM (`vm:<uuid>`) is attested through
its host's deep quote, and its result is the joint verdict."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from vroot.errors import NotFound
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors, operator_dependency
from vroot.server.api._schemas import AGENT_ID_PATTERN
from vroot.server.api._schemas_attest import AttestationOut, ResultList, ResultOut
from vroot.store import AgentKind

__all__ = ["attestation_routes"]

AgentId = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="e.g. host:host-a")]
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PEM_MEDIA = "application/x-pem-file"


def attestation_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    store = ctx.services.store
    as_operator = [Depends(operator_dependency(ctx))]

    @router.post("/v1/agents/{agent_id}/attestations", response_model=AttestationOut, status_code=202,
                 dependencies=as_operator, tags=["attestation"], responses=errors(400, 401, 404, 409, 422, 503))  # fmt: skip
    def attest(agent_id: AgentId) -> AttestationOut:
        """Challenge a host or a VM now (RA-2): a single-use nonce goes to the agent in an `attest` task
        (one open per agent: an open one is returned instead). A VM's answer is bound to a deep quote
        of the host it runs on (RA-4). Follow it with GET .../attestations/{task_id}."""
        if store.agents.get(agent_id).kind is AgentKind.GUEST:
            return AttestationOut.of(ctx.deep.request(agent_id))
        return AttestationOut.of(ctx.attestations.request(agent_id))

    @router.get("/v1/agents/{agent_id}/attestations/{task_id}", response_model=AttestationOut,
                dependencies=as_operator, tags=["attestation"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def attestation(agent_id: AgentId, task_id: TaskId) -> AttestationOut:
        """An attestation task and, once the agent (and for a VM, its host) answered, its result."""
        guest = store.agents.get(agent_id).kind is AgentKind.GUEST
        task, result = (ctx.deep if guest else ctx.attestations).status(agent_id, task_id)
        return AttestationOut.of(task, result)

    @router.get("/v1/agents/{agent_id}/result", response_model=ResultOut, dependencies=as_operator,
                tags=["attestation"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def latest_result(agent_id: AgentId) -> ResultOut:
        """The agent's latest attestation result, with its findings and signed EAR (RA-6); for a VM the
        joint verdict, naming the host that vouched for it (`host_id`, `host_result_id`)."""
        store.agents.get(agent_id)
        result = store.results.latest(agent_id)
        if result is None:
            raise NotFound(f"agent {agent_id} has not been attested yet")
        return ResultOut.of(result)

    @router.get("/v1/agents/{agent_id}/results", response_model=ResultList, dependencies=as_operator,
                tags=["attestation"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def results(agent_id: AgentId, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> ResultList:
        """The agent's results, newest first (RA-6)."""
        store.agents.get(agent_id)
        return ResultList(results=[ResultOut.of(r) for r in store.results.history(agent_id, limit=limit)])

    @router.get("/v1/result-key", response_class=Response, tags=["attestation"],
                responses={200: {"content": {PEM_MEDIA: {}}, "description": "SubjectPublicKeyInfo, PEM"}})  # fmt: skip
    def result_key() -> Response:
        """The public key that verifies the server's signed results (EAR, ES256), for relying
        parties checking them offline. Needs no credentials."""
        return Response(ctx.services.keys.result_public_pem, media_type=PEM_MEDIA)

    return router
