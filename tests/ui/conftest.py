"""Fixtures for the dashboard tests: the world of the VM attestation tests (`deep_helpers.vm_world`:
a real HTTPS server in a thread, two enrolled swtpm hosts with VMs and guests, baselines), reused
from tests/server, and one headless Chromium per module (`browser_helpers`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
for helpers in ("server", "vtm"):  # deep_helpers, server_helpers, attest_helpers; vtm_helpers
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))

os.environ.setdefault("TSS2_LOG", "all+NONE")
