"""The migration controller's API (issue 5; MC-F1, MC-F3, MC-S1, MC-S3, MC-S4): operators ask for
a migration or a drain, see where a VM could go and why other hosts are refused, and follow each
migration step by step; engines fetch the controller's certificate to check signed tasks."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from vroot.server._migrations import migration_json
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors, operator_dependency
from vroot.server.api._schemas import AGENT_ID_PATTERN

__all__ = ["migration_routes"]

AgentId = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="e.g. host:host-a")]
PEM_MEDIA = "application/x-pem-file"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigrationIn(_In):
    vm_uuid: uuid.UUID
    to: Annotated[str | None, Field(pattern=AGENT_ID_PATTERN, description="a host (host:ID); none: the best")] = None


class StepOut(BaseModel):
    name: str
    started_at: str
    finished_at: str | None
    ms: float | None
    detail: str


class MigrationOut(BaseModel):
    id: str
    vm_uuid: str
    source: str
    destination: str
    trigger: str
    state: str
    error: str | None
    created_at: str
    updated_at: str
    deadline: str
    steps: list[StepOut]


class MigrationList(BaseModel):
    migrations: list[MigrationOut]


class RefusalOut(BaseModel):
    host: str
    code: str
    reason: str


class PlacementOut(BaseModel):
    vm_uuid: str
    source: str
    destination: str | None
    candidates: list[str]
    refusals: list[RefusalOut]
    explanation: str


class DrainOut(BaseModel):
    host: str
    migrations: list[str]
    stranded: list[dict[str, str]]


def _out(record: Any) -> MigrationOut:
    return MigrationOut(**migration_json(record))


def migration_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    as_operator = [Depends(operator_dependency(ctx))]

    @router.post("/v1/migrations", response_model=MigrationOut, status_code=202, dependencies=as_operator,
                 tags=["migration"], responses=errors(400, 401, 404, 409, 422, 503))  # fmt: skip
    def request_migration(body: MigrationIn) -> MigrationOut:
        """Move a VM's vTM (MC-F1): to `to`, or to the best host the policy allows (MC-S3, MC-S4).
        409 with every host's refusal when none qualifies, or when the VM is already migrating."""
        return _out(ctx.migrations.request(body.vm_uuid, to=body.to))

    @router.get("/v1/migrations", response_model=MigrationList, dependencies=as_operator, tags=["migration"],
                responses=errors(401, 422, 503))  # fmt: skip
    def list_migrations(
        open_only: Annotated[bool, Query(alias="open")] = False,
        vm_uuid: uuid.UUID | None = None,
        host: Annotated[str | None, Query(pattern=AGENT_ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> MigrationList:
        """Migrations, newest first (MC-F3)."""
        records = ctx.services.store.migrations.list(open_only=open_only, vm_uuid=vm_uuid, host=host, limit=limit)
        return MigrationList(migrations=[_out(r) for r in records])

    @router.get("/v1/migrations/{migration_id}", response_model=MigrationOut, dependencies=as_operator,
                tags=["migration"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def get_migration(migration_id: uuid.UUID) -> MigrationOut:
        """One migration with every step's times (MC-F3)."""
        return _out(ctx.migrations.get(migration_id))

    @router.get("/v1/placement/{vm_uuid}", response_model=PlacementOut, dependencies=as_operator,
                tags=["migration"], responses=errors(401, 404, 409, 422, 503))  # fmt: skip
    def placement(vm_uuid: uuid.UUID, to: Annotated[str | None, Query(pattern=AGENT_ID_PATTERN)] = None) -> PlacementOut:
        """Where the VM could go now and why every other host is refused (a dry run; MC-S4)."""
        source, p = ctx.migrations.placement(vm_uuid, to=to)
        return PlacementOut(vm_uuid=str(vm_uuid), source=source, destination=p.destination,
                            candidates=list(p.candidates), explanation=p.explain(),
                            refusals=[RefusalOut(host=r.host, code=r.code, reason=r.reason) for r in p.refusals])  # fmt: skip

    @router.post("/v1/agents/{agent_id}/drain", response_model=DrainOut, status_code=202, dependencies=as_operator,
                 tags=["migration"], responses=errors(400, 401, 404, 422, 503))  # fmt: skip
    def drain(agent_id: AgentId) -> DrainOut:
        """Drain a host: no migration goes there any more, and each of its VMs moves to its best
        host; VMs no host can take are listed with the reason (MC-F1)."""
        got = ctx.migrations.drain(agent_id)
        return DrainOut(host=got.host, migrations=[str(m) for m in got.migrations],
                        stranded=[{"vm_uuid": vm, "reason": why} for vm, why in got.stranded])  # fmt: skip

    @router.delete("/v1/agents/{agent_id}/drain", status_code=204, response_class=Response, dependencies=as_operator,
                   tags=["migration"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def undrain(agent_id: AgentId) -> Response:
        """The host takes migrations again."""
        ctx.migrations.undrain(agent_id)
        return Response(status_code=204)

    @router.get("/v1/controller-certificate", response_class=Response, tags=["migration"],
                responses={200: {"content": {PEM_MEDIA: {}}, "description": "X.509, PEM"}})  # fmt: skip
    def controller_certificate() -> Response:
        """The certificate of the key that signs migration tasks, from the operations CA (MC-S1).
        Engines also receive it with each task; needs no credentials."""
        return Response(ctx.controller_keys.certificate_pem, media_type=PEM_MEDIA)

    return router
