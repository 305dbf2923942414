"""`ServerClient`: an agent's (or operator's) HTTPS client for the vroot server.

The server is verified against the operations CA (its certificate names localhost, 127.0.0.1, ::1
and the server's host name), or the system's CAs when none is given. An enrolled agent presents its client certificate; an operator
passes its token. Problem details come back as the `vroot.errors` class they name (an unknown
class as its family), so callers handle server errors like local ones; a server that cannot be
reached, or a TLS handshake it refuses, is `Unavailable`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from vroot import errors as E

__all__ = ["ServerClient", "error_from_problem"]

MAX_RESPONSE = 16 * 1024 * 1024


def error_from_problem(doc: Any, status: int) -> E.VrootError:
    """The vroot error a problem-details body names (its `error`, else its `category`)."""
    doc = doc if isinstance(doc, dict) else {}
    detail = str(doc.get("detail") or f"server answered {status}")
    for name in (doc.get("error"), doc.get("category")):
        cls = getattr(E, str(name or ""), None)
        if isinstance(cls, type) and issubclass(cls, E.VrootError):
            if cls is E.HostStateChanged:
                return E.HostStateChanged(detail, pcrs=doc.get("pcrs") or ())
            if cls is E.ReplayMismatch:
                return E.ReplayMismatch(detail, bank="", pcrs=doc.get("pcrs") or ())
            try:
                return cls(detail)
            except TypeError:
                break
    if status in (401, 403):
        return E.VerificationError(detail)
    if status == 404:
        return E.NotFound(detail)
    return E.Unavailable(detail) if status >= 500 else E.InvalidInput(detail)


class ServerClient:
    """Calls the server's JSON API. Thread-safe (one httpx connection pool); close when done."""

    def __init__(
        self,
        url: str,
        *,
        ca_certificate: str | Path | bytes | None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (client_cert is None) != (client_key is None):
            raise E.InvalidInput("give both client_cert and client_key, or neither")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if isinstance(ca_certificate, bytes):
                ctx.load_verify_locations(cadata=ca_certificate.decode("ascii"))
            elif ca_certificate is not None:  # None: the system's trusted CAs
                ctx.load_verify_locations(cafile=str(ca_certificate))
            if client_cert is not None:
                ctx.load_cert_chain(str(client_cert), str(client_key))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise E.InvalidInput(f"TLS material for {url}: {exc}") from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.url, verify=ctx, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        """One request (a JSON body, or raw `content`); the decoded JSON answer (or the raw bytes of
        a non-JSON one)."""
        try:
            response = self._http.request(method, path, json=json, params=params, content=content, headers=headers,
                                          timeout=self._timeout if timeout is None else timeout)  # fmt: skip
        except httpx.TransportError as exc:
            raise E.Unavailable(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from None
        body = response.content[:MAX_RESPONSE]
        kind = response.headers.get("content-type", "")
        doc: Any = body
        if "json" in kind:
            try:
                doc = response.json()
            except ValueError:
                raise E.Unavailable(f"{method} {path}: the server answered {response.status_code} with bad JSON") from None
        if response.status_code >= 400:
            raise error_from_problem(doc, response.status_code)
        return doc

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def next_task(self, agent_id: str, *, wait: float) -> dict[str, Any] | None:
        """Long-poll for the agent's next task (leased to it), or None after `wait` seconds."""
        doc = self.get(f"/v1/agents/{agent_id}/tasks", params={"wait": wait}, timeout=wait + self._timeout)
        return doc.get("task")

    def post_result(self, agent_id: str, task_id: int, *, ok: bool, result: Any) -> dict[str, Any]:
        return self.post(f"/v1/agents/{agent_id}/tasks/{task_id}/result",
                         {"status": "done" if ok else "failed", "result": result})  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
