"""Webhooks (RA-6): events POSTed to subscribers' URLs, signed, at least once.

Each delivery is one event as JSON (`event_json`), with headers

    X-Vroot-Event: verdict.changed           X-Vroot-Event-Id: 42       X-Vroot-Webhook-Id: 3
    X-Vroot-Timestamp: 1718000000            (Unix seconds when this attempt was sent)
    X-Vroot-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver recomputes the HMAC over the raw body with its secret (constant-time compare), rejects
timestamps far from its clock (replays), and deduplicates by event id: delivery is at least once.
Each webhook has a cursor in the store (the last event id delivered); the deliverer posts the
events after it in order and moves it forward only after a 2xx answer, compare-and-set, so several
replicas can run deliverers: one wins each step, and an event may reach a receiver twice but is
never skipped. A failing URL is retried with a doubling backoff (1 s up to 5 min), in order.

Secrets. The operator's secret is never stored in the clear: `secret_ref` holds it sealed with
AES-256-GCM under a key derived (HKDF-SHA256) from the server's result-signing key, which every
replica of one server shares; the webhook's URL is the associated data, so a sealed secret copied
to a webhook of another URL does not open. The secret never appears in an answer or a log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vroot.errors import Conflict, InvalidInput, NotFound, Unavailable, VrootError
from vroot.server._threads import ServiceThread
from vroot.store import EventRecord, Store, WebhookRecord

__all__ = ["SIGNATURE_HEADER", "WebhookDeliverer", "Webhooks", "event_json", "sign_delivery"]

log = logging.getLogger("vroot.server")
SIGNATURE_HEADER = "X-Vroot-Signature"
SEALED = "aesgcm:v1:"
MAX_BACKOFF = 300.0
BATCH = 100


def event_json(event: EventRecord) -> dict[str, Any]:
    """An event as event streams and webhooks send it."""
    return {"id": event.id, "kind": event.kind, "agent_id": event.agent_id,
            "created_at": event.created_at.isoformat(), "body": event.body}  # fmt: skip


def sign_delivery(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Vroot-Signature value for `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def _sealing_key(result_signing_key: ec.EllipticCurvePrivateKey) -> bytes:
    secret = result_signing_key.private_numbers().private_value.to_bytes(32, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"vroot webhook secrets v1").derive(secret)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise InvalidInput("a webhook URL is http:// or https://HOST[:PORT]/PATH, without credentials")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise InvalidInput("the webhook URL's port is not a number from 0 to 65535") from None
    return url


class Webhooks:
    """Subscriptions (operator): add, list, remove, and the sealed secrets. Raises `vroot.errors`."""

    def __init__(self, store: Store, *, result_signing_key: ec.EllipticCurvePrivateKey,
                 clock: Callable[[], datetime], rng: Callable[[int], bytes]) -> None:  # fmt: skip
        self._store = store
        self._aead = AESGCM(_sealing_key(result_signing_key))
        self._clock = clock
        self._rng = rng

    def add(self, *, url: str, kinds: tuple[str, ...], secret: str) -> WebhookRecord:
        """Subscribe `url` to events of `kinds` (all if empty) from now on."""
        check_url(url)
        nonce = self._rng(12)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), url.encode())
        ref = SEALED + base64.b64encode(sealed).decode("ascii")
        return self._store.webhooks.add(url=url, secret_ref=ref, kinds=kinds, now=self._clock(),
                                        start_after=self._store.events.last_id())  # fmt: skip

    def secret(self, hook: WebhookRecord) -> bytes:
        ref = hook.secret_ref or ""
        try:
            sealed = base64.b64decode(ref.removeprefix(SEALED), validate=True)
            if not ref.startswith(SEALED) or len(sealed) < 28:
                raise ValueError
            return self._aead.decrypt(sealed[:12], sealed[12:], hook.url.encode())
        except (ValueError, InvalidTag):
            raise InvalidInput(f"webhook {hook.id}: its secret does not open with this server's key") from None

    def list(self) -> list[WebhookRecord]:
        return self._store.webhooks.list()

    def get(self, webhook_id: int) -> WebhookRecord:
        return self._store.webhooks.get(webhook_id)

    def remove(self, webhook_id: int) -> None:
        self._store.webhooks.remove(webhook_id)


class WebhookDeliverer(ServiceThread):
    """One thread delivering every webhook's pending events; `deliver_once()` for one round."""

    thread_name = "vroot-webhooks"

    def __init__(self, store: Store, webhooks: Webhooks, *, wake: threading.Event, poll_seconds: float,
                 timeout: float, clock: Callable[[], datetime]) -> None:  # fmt: skip
        super().__init__()
        self.join_timeout = timeout + 10
        self._clock = clock
        self._store = store
        self._webhooks = webhooks
        self._wake = wake
        self._poll = poll_seconds
        self._timeout = timeout
        self._retry: dict[int, tuple[float, float]] = {}  # webhook id -> (next attempt, backoff)

    def deliver_once(self, http: httpx.Client) -> int:
        """Deliver what is pending to each webhook not backing off; how many events were delivered."""
        delivered = 0
        for hook in self._webhooks.list():
            if self._retry.get(hook.id, (0.0, 0.0))[0] > time.monotonic():
                continue
            try:
                delivered += self._deliver(http, hook)
                self._retry.pop(hook.id, None)
            except (Unavailable, InvalidInput) as exc:
                backoff = min(self._retry.get(hook.id, (0.0, 0.5))[1] * 2, MAX_BACKOFF)
                self._retry[hook.id] = (time.monotonic() + backoff, backoff)
                log.warning("webhook %d: %s; next try in %.0f s", hook.id, exc.diagnostics(), backoff)
        return delivered

    def _deliver(self, http: httpx.Client, hook: WebhookRecord) -> int:
        cursor, done = hook.last_event_id, 0
        events = self._store.events.since(cursor, limit=BATCH)
        if not events:
            return 0
        secret = self._webhooks.secret(hook)
        for event in events:
            if not hook.kinds or event.kind in hook.kinds:
                self._post(http, hook, event, secret)
                done += 1
            try:
                cursor = self._store.webhooks.advance(hook.id, expected=cursor, to=event.id).last_event_id
            except (Conflict, NotFound):  # another replica delivers this one, or it was removed
                return done
        return done

    def _post(self, http: httpx.Client, hook: WebhookRecord, event: EventRecord, secret: bytes) -> None:
        body = json.dumps(event_json(event), separators=(",", ":"), sort_keys=True).encode()
        stamp = int(self._clock().timestamp())
        headers = {"Content-Type": "application/json", "X-Vroot-Event": event.kind,
                   "X-Vroot-Event-Id": str(event.id), "X-Vroot-Webhook-Id": str(hook.id),
                   "X-Vroot-Timestamp": str(stamp), SIGNATURE_HEADER: sign_delivery(secret, stamp, body)}  # fmt: skip
        try:
            response = http.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"POST {hook.url}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise Unavailable(f"POST {hook.url} answered {response.status_code}")

    def _stopping(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self.deliver_once(http)
                except VrootError as exc:
                    log.warning("webhooks: %s", exc.diagnostics())
                self._wake.wait(self._poll)
