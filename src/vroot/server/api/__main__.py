"""Print the server's OpenAPI schema: `python -m vroot.server.api > docs/openapi.json`.

The schema does not depend on settings or data, so it is made from a throw-away server directory
and an in-memory database.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from typing import Any


def openapi_document() -> dict[str, Any]:
    from vroot.server import Services, create_app, init_server

    with tempfile.TemporaryDirectory(prefix="vroot-openapi-") as tmp:
        result = init_server(tmp, now=datetime.now(UTC), rng=os.urandom, database="sqlite://")
        services = Services.open(result.settings)
        try:
            return create_app(result.settings, services).openapi()
        finally:
            services.close()


def main() -> int:
    sys.stdout.write(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
