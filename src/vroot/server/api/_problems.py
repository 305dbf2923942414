"""The one place where errors become HTTP statuses: RFC 9457 problem details.

`STATUS` maps classes of `vroot.errors` (and the server's two auth errors) to statuses; an error
takes the status of the first class in its MRO that the table names, so a new subclass gets its
family's status without an edit here. Request validation errors (FastAPI's) and routing errors
(404/405 from Starlette) are problem details too. Any other exception is a 500 whose detail says
nothing about it (it is logged instead).

Every problem: {"type": "urn:vroot:error:<Class>", "title", "status", "detail", "error": "<Class>",
"category": "<family in vroot.errors>"}; validation problems add "errors": [{"loc", "msg", "type"}]
(never the rejected input, which could be a secret).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vroot import errors as E
from vroot.server._auth import Forbidden, Unauthenticated

__all__ = ["PROBLEM_JSON", "STATUS", "install_problem_handlers", "problem_response", "status_for"]

log = logging.getLogger("vroot.server")
PROBLEM_JSON = "application/problem+json"

STATUS: dict[type[BaseException], int] = {
    E.InvalidInput: 400,
    E.NotFound: 404,
    E.Conflict: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    E.Revoked: 403,
    E.NonceInvalid: 403,  # a challenge that is not fresh: an expired or reused enrollment
    E.VerificationError: 422,  # evidence that does not verify (EK certificate, activation, ...)
    E.Unavailable: 503,
    E.TmError: 500,
    E.VrootError: 500,
}
# The families a client can map an unknown subclass back to.
_CATEGORIES = (E.InvalidInput, E.VerificationError, E.NotFound, E.Conflict, E.Unavailable, E.TmError)


def status_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _category(exc: BaseException) -> str:
    return next((c.__name__ for c in _CATEGORIES if isinstance(exc, c)), "VrootError")


def problem_response(
    status: int, *, error: str, detail: str, category: str, extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {
        "type": f"urn:vroot:error:{error}",
        "title": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else error,
        "status": status,
        "detail": detail,
        "error": error,
        "category": category,
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ][:20]


async def _vroot_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, E.VrootError)
    status = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, E.HostStateChanged | E.ReplayMismatch):
        extra["pcrs"] = list(exc.pcrs)
    headers = {"WWW-Authenticate": 'Bearer realm="vroot"'} if status == 401 else None
    return problem_response(
        status, error=type(exc).__name__, detail=exc.diagnostics(), category=_category(exc), extra=extra,
        headers=headers,
    )  # fmt: skip


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, error="InvalidInput", detail="the request body is not valid JSON",
                                category="InvalidInput")  # fmt: skip
    listed = _validation_errors(errors)
    first = listed[0] if listed else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
    return problem_response(422, error="RequestInvalid", detail=detail, category="InvalidInput",
                            extra={"errors": listed})  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    name = {404: "NotFound", 405: "MethodNotAllowed", 413: "ContentTooLarge"}.get(status, "HTTPError")
    category = {404: "NotFound"}.get(status, "InvalidInput" if 400 <= status < 500 else "VrootError")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}"
    return problem_response(status, error=name, detail=detail, category=category, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, error="InternalError", detail="internal server error", category="VrootError")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(E.VrootError, _vroot_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
