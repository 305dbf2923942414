"""The Typer application and the one place errors become exit codes.

Exit codes (DESIGN.md section 8): 0 success, 1 a verification said no, 2 bad input or usage.
Every failure prints one line on stderr.
"""

from __future__ import annotations

import sys

import typer

from vroot import __version__
from vroot.cli.entry import COMMANDS, SUMMARY
from vroot.errors import InvalidInput, NotFound, VerificationError, VrootError

app = typer.Typer(
    name="vroot",
    help=SUMMARY,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vroot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Virtualized roots of trust (ISO/IEC 27070)."""


def completion(shell: str = typer.Argument(..., metavar="bash|zsh|fish")) -> None:
    """Print the completion script for SHELL, to source from its startup file, e.g.
    `vroot completion bash > /etc/bash_completion.d/vroot` or `eval "$(vroot completion bash)"`."""
    from typer._completion_shared import get_completion_script

    if shell not in ("bash", "zsh", "fish"):
        raise InvalidInput(f"no completion for shell {shell!r}: use bash, zsh or fish")
    print(get_completion_script(prog_name="vroot", complete_var="_VROOT_COMPLETE", shell=shell))


def _register() -> None:
    from vroot.cli import attest, baseline, demo, eventlog, guest, host, migrate, quote, server, vtm

    helps = dict(COMMANDS)
    app.command("attest", help=helps["attest"])(attest.attest)
    app.add_typer(baseline.app, name="baseline", help=helps["baseline"])
    app.command("demo", help=helps["demo"])(demo.demo)
    app.add_typer(eventlog.app, name="eventlog", help=helps["eventlog"])
    app.add_typer(guest.app, name="guest", help=helps["guest"])
    app.add_typer(host.app, name="host", help=helps["host"])
    app.command("migrate", help=helps["migrate"])(migrate.migrate)
    app.command("completion", help=helps["completion"])(completion)
    app.add_typer(quote.app, name="quote", help=helps["quote"])
    app.add_typer(server.app, name="server", help=helps["server"])
    app.add_typer(vtm.app, name="vtm", help=helps["vtm"])


_register()


def exit_code(exc: VrootError) -> int:
    """The CLI exit code for a domain error."""
    if isinstance(exc, VerificationError):
        return 1
    if isinstance(exc, InvalidInput | NotFound):
        return 2
    return 1


def run(argv: list[str]) -> int:
    """Run the CLI on `argv`; return the exit code instead of raising.

    Click handles usage errors itself (exit 2); domain errors are mapped here, one line on stderr.
    """
    try:
        app(args=argv, prog_name="vroot", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except VrootError as exc:
        print(f"vroot: error: {exc.diagnostics()}", file=sys.stderr)
        return exit_code(exc)
    return 0
