"""`vroot quote`: verify TPM2_Quote evidence from files."""

from __future__ import annotations

import typer

app = typer.Typer(help="Verify TPM 2.0 quotes.", no_args_is_help=True)
