"""`vroot demo`: the main job, told step by step. Grows with every part of vroot."""

from __future__ import annotations

import typer


def demo(
    fast: bool = typer.Option(False, "--fast", help="No pauses (for tests)."),
) -> None:
    """Run the guided demo: a simulated host measures its boot into a swtpm and proves it."""
    from vroot.demo import run_demo

    run_demo(fast=fast)
