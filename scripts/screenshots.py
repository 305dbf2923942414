#!/usr/bin/env python3
"""Photograph every page of the web dashboard into docs/screenshots/ (PNG).

    .venv/bin/python scripts/screenshots.py [--out DIR]

Runs the dashboard's browser tests (tests/ui: a real server, two swtpm hosts, their VMs, headless
Chromium) with VROOT_SCREENSHOTS=DIR, so the pictures are those of a passing run: sign-in refused,
the fleet (trusted, then with host-a untrusted), host-a's page before and after its boot loader was
tampered, a VM's page, the migration form with its placement, the migrations list and the live
events. Needs Debian's chromium and chromium-driver (make setup installs them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    args = parser.parse_args()
    env = {**os.environ, "VROOT_SCREENSHOTS": str(args.out.resolve())}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ui"], cwd=ROOT, env=env)
    if done.returncode != 0:
        print("screenshots: the browser tests failed; pictures may be missing or stale", file=sys.stderr)
        return done.returncode
    for png in sorted(args.out.glob("*.png")):
        print(f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}  {png.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
