"""`vroot demo`: the main job, told step by step. Grows with every part of vroot."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    fast: bool = typer.Option(False, "--fast", help="No pauses (for tests)."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Keep the demo's files here (default: a temporary directory, removed after)."
    ),
    keep: bool | None = typer.Option(
        None, "--keep/--no-keep",
        help="At the end, leave the server and hosts running and show the dashboard's address until Enter "
        "(default: on a terminal, unless --fast).",
    ),
) -> None:
    """Run the guided demo: an attestation server, three hosts that enroll and prove their boot, VMs
    with vTMs rooted in their host's TPM and joint verdicts; a tampered host turns untrusted, so
    when another host is drained the migration controller moves its vTMs only to the trusted one,
    where each VM unseals its secret and its joint verdict names its new host.

    Every process it starts (`vroot server run`, each host's swtpm, the vTMs) is stopped by PID
    before it exits; exit 0 when the story held, 1 otherwise."""
    import sys

    from vroot.demo import run_demo

    if keep is None:
        keep = sys.stdin.isatty() and sys.stdout.isatty() and not fast
    code = run_demo(fast=fast, workdir=workdir, keep=keep)
    if code:
        raise typer.Exit(code)
