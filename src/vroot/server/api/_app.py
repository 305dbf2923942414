"""`create_app(settings, services)`: the FastAPI application, assembled from its parts up front.

Nothing is global or made at import: each call builds its own services (host and guest
enrollments, tasks, the baseline library, host and deep attestations, webhooks, the agent
authenticator, the request counter) around
what it is given. Its four threads, the waker (long-polls and event streams), the attestation
scheduler, the webhook deliverer and the migration controller's ticker, run only between the app's
startup and shutdown (lifespan).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from vroot import __version__
from vroot.controller import ControllerKeys, load_or_create_controller_keys
from vroot.server._attest import Attestations
from vroot.server._auth import AgentAuthenticator
from vroot.server._deep import DeepAttestations
from vroot.server._enroll import Enrollments
from vroot.server._guests import GuestEnrollments
from vroot.server._library import Library
from vroot.server._migration_checks import migration_checks
from vroot.server._migrations import MigrationService, MigrationTicker
from vroot.server._scheduler import Scheduler
from vroot.server._services import Services
from vroot.server._settings import Settings
from vroot.server._tasks import TaskService, TaskWaker
from vroot.server._webhooks import WebhookDeliverer, Webhooks
from vroot.server.api._metrics import CountRequests, RequestCounts
from vroot.server.api._problems import install_problem_handlers, problem_response

__all__ = ["AppContext", "create_app"]

DESCRIPTION = """The vroot RA server and PCA (DESIGN.md sections 3, 5, 7).

Authentication: operator endpoints take `Authorization: Bearer <operator token>` (made by
`vroot server init`). Agent endpoints take the TLS client certificate issued at enrollment
(mutual TLS; the server requests one and verifies it against the operations CA). Enrollment,
health, metrics, the CRL and this schema need neither. Every error is an RFC 9457 problem
(`application/problem+json`).
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppContext:
    """What the route handlers share: built once per app."""

    settings: Settings
    services: Services
    enrollments: Enrollments
    guests: GuestEnrollments
    tasks: TaskService
    waker: TaskWaker
    authenticator: AgentAuthenticator
    counts: RequestCounts
    library: Library
    attestations: Attestations
    deep: DeepAttestations
    scheduler: Scheduler
    webhooks: Webhooks
    deliverer: WebhookDeliverer
    migrations: MigrationService
    migration_ticker: MigrationTicker
    controller_keys: ControllerKeys


class _BodyLimit:
    """Refuse request bodies larger than `limit` bytes (413), by Content-Length or as they stream."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = problem_response(413, error="ContentTooLarge", category="InvalidInput",
                                        detail=f"request body larger than {self.limit} bytes")  # fmt: skip
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings, services: Services) -> FastAPI:
    """The server's ASGI application on `services` (which the caller opens and closes)."""
    from vroot.server.api._routes_agents import agent_routes
    from vroot.server.api._routes_attest import attestation_routes
    from vroot.server.api._routes_events import event_routes
    from vroot.server.api._routes_guests import guest_routes
    from vroot.server.api._routes_library import library_routes
    from vroot.server.api._routes_migrations import migration_routes
    from vroot.server.api._routes_platform import platform_routes
    from vroot.server.api._routes_public import public_routes
    from vroot.server.api._routes_ui import ui_routes

    store, clock = services.store, services.clock
    waker = TaskWaker(store, listen_timeout=min(0.5, settings.poll_interval_seconds))
    library = Library(store, clock=clock)
    attestations = Attestations(services, library, nonce_ttl=settings.nonce_ttl)
    deep = DeepAttestations(services, attestations, library, nonce_ttl=settings.nonce_ttl,
                            batch_window=settings.deep_batch_seconds)  # fmt: skip
    scheduler = Scheduler(store, attestations, deep=deep, interval=settings.attestation_interval,
                          tick_seconds=settings.scheduler_interval_seconds, clock=clock)  # fmt: skip
    webhooks = Webhooks(store, result_signing_key=services.keys.result_signing_key, clock=clock, rng=services.rng)
    deliverer = WebhookDeliverer(store, webhooks, wake=waker.events_appended, timeout=settings.webhook_timeout_seconds,
                                 poll_seconds=max(1.0, settings.poll_interval_seconds), clock=clock)  # fmt: skip

    controller_keys = load_or_create_controller_keys(settings.keys_dir, ops=services.keys.ops, now=clock(),
                                                     serial=services.serial)  # fmt: skip
    migrations = MigrationService(services, keys=controller_keys, rules=settings.migration.rules,
                                  checks=migration_checks(store, clock=clock), timeout=settings.migration.timeout,
                                  task_ttl=settings.migration.task_ttl)  # fmt: skip
    ticker = MigrationTicker(migrations, tick_seconds=settings.migration.tick_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waker.start()
        scheduler.start()
        deliverer.start()
        ticker.start()
        try:
            yield
        finally:
            ticker.stop()
            deliverer.stop()
            scheduler.stop()
            waker.stop()

    app = FastAPI(
        title="vroot",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    ctx = AppContext(
        settings=settings,
        services=services,
        enrollments=Enrollments(services, ttl=settings.enrollment_ttl),
        guests=GuestEnrollments(services, ttl=settings.enrollment_ttl),
        tasks=TaskService(store, lease=settings.task_lease, clock=clock),
        waker=waker,
        authenticator=AgentAuthenticator(store, ops_certificate=services.keys.ops.certificate, clock=clock),
        counts=RequestCounts(),
        library=library,
        attestations=attestations,
        deep=deep,
        scheduler=scheduler,
        webhooks=webhooks,
        deliverer=deliverer,
        migrations=migrations,
        migration_ticker=ticker,
        controller_keys=controller_keys,
    )
    install_problem_handlers(app)
    app.include_router(public_routes(ctx))
    app.include_router(guest_routes(ctx))
    app.include_router(agent_routes(ctx))
    app.include_router(attestation_routes(ctx))
    app.include_router(library_routes(ctx))
    app.include_router(event_routes(ctx))
    app.include_router(migration_routes(ctx))
    app.include_router(platform_routes(ctx))
    app.include_router(ui_routes(ctx))
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CountRequests, counts=ctx.counts)
    app.state.vroot = ctx
    return app

