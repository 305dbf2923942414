"""`vroot eventlog`: show and replay TCG PC Client and IMA measurement logs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Read, show and replay TCG and IMA measurement logs.", no_args_is_help=True)
