"""The CLI's contract: exit codes and one-line errors (DESIGN.md section 8)."""

from __future__ import annotations

import subprocess
import sys

from vroot import __version__
from vroot.cli.main import exit_code, run
from vroot.errors import EventLogError, NonceMismatch, Unavailable


def test_version_prints_package_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vroot {__version__}"


def test_unknown_command_is_a_usage_error():
    assert run(["no-such-command"]) == 2


def test_exit_codes_follow_the_error_tree():
    assert exit_code(EventLogError("truncated", offset=3)) == 2
    assert exit_code(NonceMismatch("nonce")) == 1
    assert exit_code(Unavailable("swtpm")) == 1


def test_offset_errors_say_where():
    assert str(EventLogError("truncated event header", offset=12, source="x.bin")) == (
        "x.bin, offset 12: truncated event header"
    )


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "vroot.cli.entry", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_fast_help_lists_exactly_the_registered_commands(capsys):
    """`vroot --help` is printed without Typer; it must not drift from the commands Typer serves."""
    import typer.main

    from vroot.cli.entry import COMMANDS, main
    from vroot.cli.main import app

    group = typer.main.get_command(app)
    assert set(group.commands) == {name for name, _ in COMMANDS}
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, text in COMMANDS:
        assert f"  {name}" in out and text in out
        assert group.commands[name].help == text


def test_fast_paths_fall_back_to_typer_for_anything_else(capsys):
    from vroot.cli.entry import main

    assert main(["eventlog", "replay", "--no-such-flag", "x", "--json"]) == 2


def test_installed_launcher_keeps_help_free_of_heavy_imports():
    """`vroot --help` start-up is benchmarked: the launcher must not pull in Typer, Rich or re."""
    from pathlib import Path

    launcher = Path(sys.executable).parent / "vroot"
    assert launcher.exists(), "make setup installs bin/vroot into the venv"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(launcher), "--help"], capture_output=True, text=True, check=True
    )
    assert "Commands:" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"typer", "rich", "re", "cryptography"}, imported & {"typer", "rich", "re", "cryptography"}
