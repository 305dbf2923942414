"""`make demo` (first version): the story holds and nothing is left running."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from vroot.demo import run_demo
from vroot.tm.swtpm import running_pids

pytestmark = pytest.mark.tpm


def test_demo_tells_the_whole_story():
    tmp_path = Path(tempfile.mkdtemp(prefix="vrd", dir="/tmp"))  # short: vTM sockets live under it
    console = Console(record=True, width=120, force_terminal=False)
    try:
        code = run_demo(fast=True, workdir=tmp_path, console=console)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert code == 0, console.export_text()[-2000:]
    text = console.export_text()
    assert "quote by the host AK verified" in text
    assert "stage boot-loader differs from the known-good boot" in text
    assert text.count("vTM refused to start (host PCRs 4 (sha256) differ") == 3
    assert text.count("secret unsealed") == 3
    assert running_pids() == ()


def test_demo_command_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "vroot.cli.entry", "demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Demo complete" in out.stdout
