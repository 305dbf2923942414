"""The host agent's local API: JSON over HTTP/1.1 on a unix socket (`DIR/agent.sock`, mode 0600).

Only local processes with access to the host directory reach it (`vroot vtm ...`, the guest
simulation, tests). Errors are RFC 9457 problem details whose `error` member names the class of
`vroot.errors`; `AgentClient` raises that same class again, so a CLI maps it to its exit code.
"""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from vroot import errors as E

__all__ = ["AgentClient", "AgentServer", "Response", "problem"]

MAX_BODY = 16 * 1024 * 1024
Response = tuple[int, dict]
Handler = Callable[[str, str, dict], Response]

_STATUS = (
    (E.InvalidInput, 400),
    (E.NotFound, 404),
    (E.Conflict, 409),
    (E.VerificationError, 422),
    (E.Unavailable, 503),
    (E.TmError, 500),
    (E.VrootError, 500),
)


def problem(exc: E.VrootError) -> Response:
    """Problem details for a domain error (status by the first matching class of the error tree)."""
    category, status = next((cls, code) for cls, code in _STATUS if isinstance(exc, cls))
    body = {
        "type": f"urn:vroot:error:{type(exc).__name__}",
        "title": type(exc).__name__,
        "status": status,
        "detail": exc.diagnostics(),
        "error": type(exc).__name__,
        "category": category.__name__,  # for errors defined outside vroot.errors (subclasses of these)
    }
    if isinstance(exc, E.HostStateChanged | E.ReplayMismatch):
        body["pcrs"] = list(exc.pcrs)
    return status, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AgentServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass

    def _respond(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._respond(*problem(E.InvalidInput(f"request body of {length} bytes (at most {MAX_BODY})")))
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self._respond(*problem(E.InvalidInput(f"request body: {exc}")))
            return
        try:
            status, out = self.server.handler(self.command, self.path, body)
        except E.VrootError as exc:
            status, out = problem(exc)
        except Exception as exc:  # a bug must not kill the agent; report it as a 500
            status, out = 500, {"title": "internal error", "status": 500, "detail": f"{type(exc).__name__}: {exc}",
                                "error": "VrootError"}  # fmt: skip
        self._respond(status, out)

    do_GET = do_POST = do_DELETE = _dispatch


class AgentServer(socketserver.UnixStreamServer):
    """One request at a time: the host TM has one connection, and every request may use it."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.handler = handler
        if path.exists() or path.is_symlink():
            path.unlink()
        super().__init__(str(path), _Handler)
        path.chmod(0o600)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class AgentClient:
    """Calls a running host agent; raises the agent's errors as `vroot.errors` classes."""

    def __init__(self, socket_path: Path, *, timeout: float = 120.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                payload = json.dumps(body).encode() if body is not None else None
                headers = {"Content-Type": "application/json"} if payload is not None else {}
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (FileNotFoundError, ConnectionRefusedError):
                raise E.Unavailable(
                    f"no host agent answers on {self.socket_path} (start it with `vroot host run DIR`)"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise E.Unavailable(f"host agent on {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            raise E.Unavailable(
                f"host agent answered {response.status} with a body that is not JSON"
            ) from None
        if response.status >= 400:
            raise _error_from(doc, response.status)
        return doc


def _error_from(doc: dict, status: int) -> E.VrootError:
    name = str(doc.get("error", ""))
    detail = str(doc.get("detail", f"host agent error {status}"))
    cls = getattr(E, name, None)
    if not (isinstance(cls, type) and issubclass(cls, E.VrootError)):
        cls = getattr(E, str(doc.get("category", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, E.VrootError)):
        cls = E.VrootError
    if cls is E.HostStateChanged:
        return E.HostStateChanged(detail, pcrs=doc.get("pcrs", ()))
    if cls is E.ReplayMismatch:
        return E.ReplayMismatch(detail, bank="", pcrs=doc.get("pcrs", ()))
    try:
        return cls(detail)
    except TypeError:
        return E.VrootError(detail)
