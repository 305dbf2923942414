"""The guided demo (placeholder until the measured boot lands)."""

from __future__ import annotations


def run_demo(*, fast: bool = False) -> None:
    from rich.console import Console

    Console().print("[bold]vroot demo[/bold]: the measured host boot is being built; see the README.")
