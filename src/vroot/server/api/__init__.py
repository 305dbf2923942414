"""The HTTP API of the vroot server: `create_app(settings, services) -> FastAPI`.

Versioned JSON under `/v1`, RFC 9457 problem details for every error (one class-to-status table,
`STATUS`), Prometheus metrics at `/metrics`, the OpenAPI schema at `/openapi.json` (checked in as
`docs/openapi.json`; regenerate with `python -m vroot.server.api > docs/openapi.json`).
"""

from vroot.server.api._app import AppContext, create_app
from vroot.server.api._problems import STATUS, status_for

__all__ = ["STATUS", "AppContext", "create_app", "status_for"]
