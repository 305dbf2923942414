"""The web dashboard's static files (issue 6, point 1), served at `/ui/` by the same server.

The dashboard is a few static files (`vroot.server.ui`: HTML, one style sheet, ES modules) read
once when the app is built; it fetches everything else from the operator API with the operator
token the user types in (kept in the tab's sessionStorage, sent as `Authorization: Bearer`).
These routes need no token: the files hold no data. Only the files the package lists are served
(no path is joined from the request), each with a Content-Security-Policy that allows nothing
but this origin: no inline script, no frame, nothing from elsewhere. `/` redirects to `/ui/`.
None of them is in the OpenAPI schema.
"""

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import RedirectResponse

from vroot.errors import NotFound
from vroot.server.api._app import AppContext

__all__ = ["ui_routes"]

MEDIA = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}  # fmt: skip


def _assets() -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, media type)} of every file of the dashboard package it can serve."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in files("vroot.server.ui").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA:
            out[entry.name] = (entry.read_bytes(), MEDIA[suffix])
    return out


def ui_routes(ctx: AppContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    assets = _assets()

    def serve(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"no such dashboard file: {name[:80]!r}")
        body, media = assets[name]
        return Response(body, media_type=media, headers=HEADERS)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui")
    def ui_bare() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/")
    def index() -> Response:
        return serve("index.html")

    @router.get("/ui/{name}")
    def asset(name: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,40}\.[a-z]{2,4}$")]) -> Response:
        return serve(name)

    return router
