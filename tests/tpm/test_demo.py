"""`make demo` (first version): the story holds and nothing is left running."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console

from vroot.demo import run_demo
from vroot.tm.swtpm import running_pids

pytestmark = pytest.mark.tpm


def test_demo_finds_the_tampered_boot_loader(tmp_path):
    console = Console(record=True, width=120, force_terminal=False)
    assert run_demo(fast=True, workdir=tmp_path, console=console) == 0
    text = console.export_text()
    assert "quote signature valid" in text
    assert "stage boot-loader: digest differs from the known-good boot (PCR 4)" in text
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
