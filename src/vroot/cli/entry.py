"""Console entry point, kept tiny: `vroot` must start about as fast as a bare interpreter.

Two paths never import Typer or Rich (their import alone costs several times the interpreter's
start-up): the top-level help (`vroot`, `vroot --help`, `vroot -h`), printed from `COMMANDS`,
the same table `cli/main.py` registers the subcommands from; and `vroot eventlog replay FILE
[--ima] --json`, the command checks call, served by `vroot.cli.eventlog.fast_replay`. Anything
else, and any error on the fast paths, goes to the Typer app, which reports it the one way.
"""

from __future__ import annotations

import os
import sys

# (name, one-line help) of every top-level command, in the order `vroot --help` lists them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("attest", "Attest a host or a VM now: its verdict, findings and signed result from the RA server."),
    ("baseline", "Learn, show and apply baselines (reference values) and policies."),
    ("demo", "Run the guided demo: hosts and VMs attested together, a tampered host, vTMs migrated."),
    ("completion", "Print the shell completion script: vroot completion bash|zsh|fish."),
    ("eventlog", "Read, show and replay TCG and IMA measurement logs."),
    ("guest", "Run the guest attester of a VM (its vTM, the RA server)."),
    ("host", "Provision a host's TM and run the host agent that owns its vTMs."),
    ("migrate", "Move a VM's vTM to a host that has just proven itself trustworthy (the migration controller)."),
    ("quote", "Verify TPM 2.0 quotes."),
    ("server", "Run the RA server and PCA (HTTPS, mutual TLS for agents)."),
    ("vtm", "Create, start, stop and destroy vTMs (one per VM) on a running host agent."),
)
SUMMARY = "Virtualized roots of trust (ISO/IEC 27070): TPM-rooted vTPMs, attestation, migration."


def top_level_help() -> str:
    width = max(len(name) for name, _ in COMMANDS) + 2
    lines = [
        "Usage: vroot [OPTIONS] COMMAND [ARGS]...",
        "",
        f"  {SUMMARY}",
        "",
        "Options:",
        "  --version  Show the version.",
        "  --help     Show this message and exit.",
        "",
        "Commands:",
        *(f"  {name.ljust(width)}{text}" for name, text in COMMANDS),
        "",
        "Run 'vroot COMMAND --help' for a command's options.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "_VROOT_COMPLETE" in os.environ:  # the shell asks for completions: Typer answers
        from typer._completion_classes import completion_init

        from vroot.cli.main import run

        completion_init()
        return run(args)
    if not args or args == ["--help"] or args == ["-h"]:
        sys.stdout.write(top_level_help())
        return 0
    if args == ["--version"]:
        from vroot import __version__

        sys.stdout.write(f"vroot {__version__}\n")
        return 0
    if args[:2] == ["eventlog", "replay"]:
        from vroot.cli.eventlog import fast_replay

        code = fast_replay(args[2:])
        if code is not None:
            return code
    from vroot.cli.main import run

    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
