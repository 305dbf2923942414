"""Console entry point: kept tiny so `vroot` starts fast; the Typer app is built on first use."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vroot.cli.main import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
