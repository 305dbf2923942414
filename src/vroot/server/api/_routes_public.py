"""Endpoints that need no agent certificate: health, metrics, status, the CRL, enrollment."""

from collections import Counter
from datetime import timedelta
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Path, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vroot import __version__
from vroot.pca import build_crl
from vroot.server._auth import check_operator_token
from vroot.server.api._app import AppContext
from vroot.server.api._metrics import CONTENT_TYPE, render_metrics
from vroot.server.api._problems import PROBLEM_JSON
from vroot.server.api._schemas import (
    AGENT_ID_PATTERN,
    ActivationIn,
    ChallengeOut,
    EnrolledOut,
    EnrollmentIn,
    Health,
    Problem,
    Status,
)

__all__ = ["errors", "operator_dependency", "public_routes"]

CRL_VALIDITY = timedelta(hours=1)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses an operation may return."""
    return {s: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "problem details"} for s in statuses}


def operator_dependency(ctx: AppContext) -> Any:
    bearer = HTTPBearer(auto_error=False, scheme_name="operatorToken", description="the operator token")

    def operator(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
        header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        check_operator_token(header, expected_sha256=ctx.settings.operator_token_sha256)

    return operator


def _reason(name: str) -> x509.ReasonFlags | None:
    return x509.ReasonFlags[name] if name in x509.ReasonFlags.__members__ else None


def public_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    store = ctx.services.store
    operator = operator_dependency(ctx)

    @router.get("/v1/health", response_model=Health, responses=errors(503), tags=["service"])
    def health() -> Health:
        """Liveness and readiness: 200 when the database answers, 503 otherwise."""
        store.revision()  # raises Unavailable when the database does not answer
        return Health(status="ok", version=__version__)

    @router.get("/metrics", response_class=Response, tags=["service"],
                responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})  # fmt: skip
    def metrics() -> Response:
        """Prometheus metrics: requests by route and status, agents by kind and state, latest verdicts."""
        return Response(render_metrics(ctx.counts, store), media_type=CONTENT_TYPE)

    @router.get("/v1/status", response_model=Status, responses=errors(401, 503), tags=["operator"],
                dependencies=[Depends(operator)])  # fmt: skip
    def status() -> Status:
        """Database, schema and counts, for `vroot server status` (operator)."""
        agents = store.agents.list()
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, state), n in sorted(Counter((a.kind.value, a.state.value) for a in agents).items()):
            by_kind.setdefault(kind, {})[state] = n
        latest = store.results.latest_for(a.id for a in agents)
        verdicts = dict(Counter(r.verdict.value for r in latest.values()))
        return Status(version=__version__, database=store.dialect, schema_current=store.is_current(),
                      agents=by_kind, verdicts=verdicts)  # fmt: skip

    @router.get("/v1/crl", response_class=Response, tags=["service"], responses={
        200: {"content": {"application/pkix-crl": {}}, "description": "DER X.509 CRL"}, **errors(503)})  # fmt: skip
    def crl() -> Response:
        """The operations CA's CRL (revoked client certificates), rebuilt from the store on each call."""
        now = ctx.services.clock()
        revoked = [(r.serial, min(r.revoked_at, now), _reason(r.reason)) for r in store.revocations.list()]
        der = build_crl(ca=ctx.services.keys.ops, revoked=revoked, now=now, next_update=now + CRL_VALIDITY)
        return Response(der.public_bytes(Encoding.DER), media_type="application/pkix-crl")

    @router.post("/v1/enrollments", response_model=ChallengeOut, status_code=201, tags=["enrollment"],
                 responses=errors(400, 403, 409, 422, 503))  # fmt: skip
    def begin_enrollment(body: EnrollmentIn) -> ChallengeOut:
        """Begin a host's enrollment (RA-1): its EK certificate is checked against the manufacturer
        CAs and its AK's attributes; the answer is a credential only that TM can open for that AK."""
        return ChallengeOut.of(ctx.enrollments.begin(body.to_domain()))

    @router.post("/v1/enrollments/{agent_id}/activation", response_model=EnrolledOut, tags=["enrollment"],
                 responses=errors(400, 403, 404, 409, 422, 503))  # fmt: skip
    def activate(body: ActivationIn, agent_id: Annotated[str, Path(pattern=AGENT_ID_PATTERN)]) -> EnrolledOut:
        """Finish it with the secret the TM released: the PCA issues the AK certificate, the operations
        CA the client certificate for `client_key`, and the agent becomes active. Single use."""
        return EnrolledOut.of(ctx.enrollments.activate(body.to_domain(agent_id)))

    return router
