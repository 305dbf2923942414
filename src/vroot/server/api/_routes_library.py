"""The baseline library through the operator API (issue 4, point 5): baselines by name and version,
one policy per group (optimistic versions: If-Match / ETag), and an agent's group.

Manifests are sent as they are written, YAML or JSON (`vroot baseline learn` output), and checked
with `vroot.baseline.load_manifest` / `load_policy` before anything is stored."""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from vroot.errors import InvalidInput
from vroot.server._migrations import DRAIN_LABEL
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors, operator_dependency
from vroot.server.api._schemas import AGENT_ID_PATTERN, AgentOut
from vroot.server.api._schemas_attest import (
    GROUP_PATTERN,
    NAME_PATTERN,
    AgentPatch,
    BaselineList,
    BaselineOut,
    PolicyList,
    PolicyOut,
)
from vroot.store import KEEP

__all__ = ["library_routes"]

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="baseline name")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="baseline version")]
Group = Annotated[str, Path(pattern=GROUP_PATTERN, description="policy group")]
AgentId = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="e.g. host:host-a")]
_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,10})"?\s*$')
MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "the manifest, YAML or JSON",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def _expected_version(if_match: str | None) -> int:
    if if_match is None:
        return 0
    m = _ETAG.match(if_match)
    if m is None:
        raise InvalidInput('If-Match must be the policy version read (e.g. "3")')
    return int(m.group(1))


def library_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    store, library = ctx.services.store, ctx.library
    as_operator = [Depends(operator_dependency(ctx))]

    @router.put("/v1/baselines/{name}/{version}", response_model=BaselineOut, status_code=201,
                dependencies=as_operator, tags=["library"], openapi_extra=MANIFEST_BODY,
                responses=errors(400, 401, 409, 413, 422, 503))  # fmt: skip
    async def put_baseline(request: Request, name: Name, version: Version) -> BaselineOut:
        """Store version `version` of baseline `name` (a baseline manifest naming it). Versions are
        immutable: 409 if it exists. Policies use the newest version unless they pin one."""
        body = await request.body()
        return BaselineOut.of(await run_in_threadpool(library.put_baseline, name, version, body))

    @router.get("/v1/baselines", response_model=BaselineList, dependencies=as_operator, tags=["library"],
                responses=errors(401, 422, 503))  # fmt: skip
    def list_baselines(latest: bool = False) -> BaselineList:
        """Every stored baseline version (with `latest`, the newest of each name)."""
        return BaselineList(baselines=[BaselineOut.of(b) for b in store.baselines.list(latest=latest)])

    @router.get("/v1/baselines/{name}", response_model=BaselineOut, dependencies=as_operator, tags=["library"],
                responses=errors(401, 404, 422, 503))  # fmt: skip
    def newest_baseline(name: Name) -> BaselineOut:
        return BaselineOut.of(library.get_baseline(name))

    @router.get("/v1/baselines/{name}/{version}", response_model=BaselineOut, dependencies=as_operator,
                tags=["library"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def get_baseline(name: Name, version: Version) -> BaselineOut:
        return BaselineOut.of(library.get_baseline(name, version))

    @router.put("/v1/policies/{group}", response_model=PolicyOut, dependencies=as_operator, tags=["library"],
                openapi_extra=MANIFEST_BODY, responses={201: {"model": PolicyOut, "description": "created"},
                                                        **errors(400, 401, 409, 413, 422, 503)})  # fmt: skip
    async def put_policy(
        request: Request,
        response: Response,
        group: Group,
        if_match: Annotated[str | None, Header(max_length=64, description="the version read; omit to create")] = None,
        baseline_version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="pin this baseline version")] = None,
    ) -> PolicyOut:
        """Create (no If-Match) or replace (If-Match: the version read; 409 if it changed since) the
        policy of `group`. The manifest names its baseline, which must be stored; the newest version
        of it is applied at each appraisal unless `baseline_version` pins one."""
        expected = _expected_version(if_match)
        body = await request.body()
        record = await run_in_threadpool(library.put_policy, group, body, expected_version=expected,
                                          baseline_version=baseline_version)  # fmt: skip
        response.status_code = 201 if expected == 0 else 200
        response.headers["ETag"] = f'"{record.version}"'
        return PolicyOut.of(record)

    @router.get("/v1/policies", response_model=PolicyList, dependencies=as_operator, tags=["library"],
                responses=errors(401, 503))  # fmt: skip
    def list_policies() -> PolicyList:
        return PolicyList(policies=[PolicyOut.of(p) for p in store.policies.list()])

    @router.get("/v1/policies/{group}", response_model=PolicyOut, dependencies=as_operator, tags=["library"],
                responses=errors(401, 404, 422, 503))  # fmt: skip
    def get_policy(group: Group, response: Response) -> PolicyOut:
        record = library.get_policy(group)
        response.headers["ETag"] = f'"{record.version}"'
        return PolicyOut.of(record)

    @router.patch("/v1/agents/{agent_id}", response_model=AgentOut, dependencies=as_operator, tags=["operator"],
                  responses=errors(400, 401, 404, 422, 503))  # fmt: skip
    def patch_agent(body: AgentPatch, agent_id: AgentId) -> AgentOut:
        """Assign an agent's policy group and its placement attributes (labels, zone, capacity: what
        the migration controller reads). The next appraisal uses the new group."""
        labels: Any = KEEP
        if body.labels is not None:  # a drain is ended with DELETE .../drain, never by replacing labels
            draining = {k: v for k, v in store.agents.get(agent_id).labels.items() if k == DRAIN_LABEL}
            labels = {**body.labels, **draining}
        group = KEEP if body.group is None else body.group
        zone = KEEP if body.zone is None else body.zone
        capacity = KEEP if body.capacity is None else body.capacity
        return AgentOut.of(store.agents.update(agent_id, group=group, labels=labels, zone=zone, capacity=capacity))

    return router
