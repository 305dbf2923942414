"""Events as server-sent events, and webhook subscriptions (RA-6: a change of verdict is published).

`GET /v1/events` (operator) streams `text/event-stream`: one message per event (`id:` the event id,
`event:` its kind, `data:` its JSON), a comment line every `event_keepalive_seconds` while idle,
and it ends after `max_wait_seconds` (clients reconnect; the `retry:` field says when). A client
resumes where it left off with `Last-Event-ID` (the header browsers send on reconnect, or the
`last_event_id` query parameter); without either it starts with the events after now. Appends wake
the stream at once (the app's waker: LISTEN/NOTIFY across replicas on PostgreSQL).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from vroot.server._webhooks import event_json
from vroot.server.api._app import AppContext
from vroot.server.api._routes_public import errors, operator_dependency
from vroot.server.api._schemas import AGENT_ID_PATTERN
from vroot.server.api._schemas_attest import EVENT_KIND_PATTERN, WebhookIn, WebhookList, WebhookOut

__all__ = ["event_routes"]

BATCH = 100
RETRY_MS = 1000
EventId = Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$")]


def event_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter()
    store, settings, waker = ctx.services.store, ctx.settings, ctx.waker
    as_operator = [Depends(operator_dependency(ctx))]

    async def stream(last: int, kinds: Sequence[str] | None, agent_id: str | None) -> AsyncIterator[bytes]:
        woken = waker.subscribe_events()
        started = sent = time.monotonic()
        try:
            yield f"retry: {RETRY_MS}\n: vroot events after {last}\n\n".encode()
            while True:
                woken.clear()  # before reading: an append after the read sets it again
                batch = await run_in_threadpool(store.events.since, last, limit=BATCH, kinds=kinds, agent_id=agent_id)
                for event in batch:
                    data = json.dumps(event_json(event), separators=(",", ":"))
                    yield f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()
                    last = event.id
                now = time.monotonic()
                if batch:
                    sent = now
                    if len(batch) == BATCH:
                        continue
                if now - started >= settings.max_wait_seconds:
                    return
                if now - sent >= settings.event_keepalive_seconds:
                    yield b": keep-alive\n\n"
                    sent = now
                timeout = min(settings.poll_interval_seconds, settings.max_wait_seconds - (now - started),
                              settings.event_keepalive_seconds - (now - sent))  # fmt: skip
                try:
                    await asyncio.wait_for(woken.wait(), timeout=max(timeout, 0.01))
                except TimeoutError:
                    pass
        finally:
            waker.unsubscribe_events(woken)

    @router.get("/v1/events", response_class=StreamingResponse, dependencies=as_operator, tags=["events"],
                responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
                           **errors(401, 422, 503)})  # fmt: skip
    async def events(
        last_event_id_header: EventId = None,
        last_event_id: Annotated[int | None, Query(ge=0, le=2**62, description="resume after this event id")] = None,
        kind: Annotated[list[Annotated[str, Query(pattern=EVENT_KIND_PATTERN)]] | None,
                        Query(max_length=32, description="only these kinds (repeatable)")] = None,
        agent_id: Annotated[str | None, Query(pattern=AGENT_ID_PATTERN, description="only this agent's")] = None,
    ) -> StreamingResponse:
        """Server-sent events (operator): verdict changes, enrollments, revocations, moves."""
        if last_event_id_header is not None:
            start = int(last_event_id_header)
        elif last_event_id is not None:
            start = last_event_id
        else:
            start = await run_in_threadpool(store.events.last_id)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(start, kind, agent_id), media_type="text/event-stream", headers=headers)

    @router.post("/v1/webhooks", response_model=WebhookOut, status_code=201, dependencies=as_operator,
                 tags=["events"], responses=errors(400, 401, 422, 503))  # fmt: skip
    def add_webhook(body: WebhookIn) -> WebhookOut:
        """Subscribe a URL to events from now on: each is POSTed as JSON, signed with HMAC-SHA256 of
        the secret (X-Vroot-Signature), at least once and in order."""
        return WebhookOut.of(ctx.webhooks.add(url=body.checked_url(), kinds=tuple(body.kinds), secret=body.secret))

    @router.get("/v1/webhooks", response_model=WebhookList, dependencies=as_operator, tags=["events"],
                responses=errors(401, 503))  # fmt: skip
    def list_webhooks() -> WebhookList:
        return WebhookList(webhooks=[WebhookOut.of(w) for w in ctx.webhooks.list()])

    @router.delete("/v1/webhooks/{webhook_id}", status_code=204, response_class=Response, dependencies=as_operator,
                   tags=["events"], responses=errors(401, 404, 422, 503))  # fmt: skip
    def remove_webhook(webhook_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Response:
        """Stop delivering to a webhook."""
        ctx.webhooks.remove(webhook_id)
        return Response(status_code=204)

    return router
