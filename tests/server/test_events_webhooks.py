"""Events published (RA-6) through a real server: server-sent events that resume with Last-Event-ID
and keep idle connections alive, and webhooks signed with HMAC-SHA256, delivered at least once and
in order through a receiver that fails, filtered by kind, with the secret never stored in the clear."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
from attest_helpers import EventStream, WebhookReceiver, wait_for

from vroot.errors import InvalidInput, NotFound

SECRET = "a-webhook-secret-of-some-length"


def append(server, kind: str = "verdict.changed", **body: object) -> int:  # noqa: ANN001
    return server.services.store.events.append(kind, body=body, now=server.clock())


def test_event_stream_resumes_after_last_event_id_and_keeps_alive(server_factory):
    server = server_factory(event_keepalive_seconds=0.2, max_wait_seconds=1.5)
    old = [append(server, n=i) for i in range(3)]
    stream = EventStream(server, last_event_id=old[0])
    try:
        got = [stream.next(lambda e: True)["id"] for _ in range(2)]
        assert got == old[1:]
        started = time.monotonic()
        live = append(server, n=3)
        assert stream.next(lambda e: True)["id"] == live and time.monotonic() - started < 1.0  # woken, not polled
        wait_for(lambda: ": keep-alive" in stream.comments, what="a keep-alive comment")
        wait_for(lambda: stream.connections >= 2, timeout=5, what="the stream to end and be resumed")
        after = append(server, n=4)
        assert stream.next(lambda e: True)["id"] == after  # resumed after `live`: nothing twice
        assert stream.events.empty()
    finally:
        stream.close()


def test_event_stream_starts_now_and_filters(server_factory):
    server = server_factory(event_keepalive_seconds=0.3)
    append(server, n=0)
    stream = EventStream(server, params={"kind": "agent.revoked"})
    try:
        append(server, "verdict.changed", n=1)
        wanted = append(server, "agent.revoked", n=2)
        event = stream.next(lambda e: True)
        assert (event["id"], event["kind"], event["body"]) == (wanted, "agent.revoked", {"n": 2})
    finally:
        stream.close()
    tls = ssl.create_default_context(cafile=str(server.ca))
    with httpx.Client(base_url=server.url, verify=tls, timeout=10) as http:
        assert http.get("/v1/events").status_code == 401
        auth = {"Authorization": f"Bearer {server.token}"}
        bad = http.get("/v1/events", headers={**auth, "Last-Event-ID": "not-a-number"})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        with http.stream("GET", "/v1/events", headers=auth, params={"last_event_id": 0}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                if line.startswith("data: "):
                    break
            assert "id: 1" in lines and "event: verdict.changed" in lines  # from the start, by query


def test_webhook_is_signed_filtered_and_delivered_at_least_once_in_order(server):
    op, store = server.operator(), server.services.store
    before = append(server, n=-1)  # events before the subscription are not delivered
    receiver = WebhookReceiver(failures=2)
    try:
        hook = op.post("/v1/webhooks", {"url": receiver.url, "kinds": ["verdict.changed"], "secret": SECRET})
        assert hook["last_event_id"] == before and SECRET not in str(hook)
        skipped = append(server, "agent.enrolled")
        first, second = append(server, n=1), append(server, n=2)
        delivered = wait_for(lambda: (d := receiver.deliveries(SECRET)) and len(d) >= 2 and d, what="two deliveries")
        assert [d["id"] for d in delivered] == [first, second]
        refused = receiver.deliveries(SECRET, accepted=False)[:2]
        assert [d["id"] for d in refused] == [first, first]  # refused twice, then delivered: in order
        assert skipped not in {d["id"] for d in receiver.deliveries(SECRET, accepted=False)}
        wait_for(lambda: op.get("/v1/webhooks")["webhooks"][0]["last_event_id"] == second, what="the cursor")
        stored = store.webhooks.get(hook["id"])
        assert stored.secret_ref.startswith("aesgcm:v1:") and SECRET not in stored.secret_ref

        op.request("DELETE", f"/v1/webhooks/{hook['id']}")
        seen = len(receiver.received)
        append(server, n=3)
        time.sleep(1.0)
        assert len(receiver.received) == seen and op.get("/v1/webhooks") == {"webhooks": []}
        with pytest.raises(NotFound):
            op.request("DELETE", f"/v1/webhooks/{hook['id']}")
    finally:
        receiver.close()


@pytest.mark.parametrize("body", [
    {"url": "ftp://127.0.0.1/hook", "kinds": [], "secret": SECRET},
    {"url": "http://user:pw@127.0.0.1/hook", "kinds": [], "secret": SECRET},
    {"url": "http://127.0.0.1:99999/hook", "kinds": [], "secret": SECRET},
    {"url": "http://127.0.0.1/hook", "kinds": ["Not A Kind"], "secret": SECRET},
    {"url": "http://127.0.0.1/hook", "kinds": [], "secret": "short"},
])  # fmt: skip
def test_webhook_input_is_checked_and_the_secret_never_echoed(server, body):
    with pytest.raises(InvalidInput) as info:
        server.operator().post("/v1/webhooks", body)
    assert body["secret"] not in str(info.value)
    assert server.services.store.webhooks.list() == []
