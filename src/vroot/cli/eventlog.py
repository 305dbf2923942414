"""`vroot eventlog`: show and replay TCG PC Client and IMA measurement logs.

    vroot eventlog show FILE [--ima]            a table: index, PCR, type, digests, description
    vroot eventlog replay FILE [--ima] [--json] PCR values; --json prints
        {"pcrs": {"sha1": {"0": "<hex>", ...}, "sha256": {...}}, "events": N}

A TCG log by default (PCRs 0-23 of every bank it carries), an IMA list with `--ima` (ASCII or
binary, told apart by content; the PCRs its entries extend, banks sha1 and sha256). `replay` never
applies firmware-bug workarounds. A missing or malformed file raises `InvalidInput`/`EventLogError`,
which `cli/main.py` prints as one line (`vroot: error: FILE, offset N: what`) with exit code 2.

Start-up matters (`vroot eventlog replay` is benchmarked against a bare interpreter): this module
does not import Typer, Rich or vroot.eventlog at import time. The Typer `app` is built on first
access, and `fast_replay` serves `eventlog replay FILE --json` without Typer at all for a console
entry point that wants it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:  # pragma: no cover
    import typer

    app: typer.Typer


def _read(path: str) -> bytes:
    from vroot.errors import InvalidInput

    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory, not a log file") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror or exc}") from None


def replay_json(path: str, *, ima: bool) -> str:
    """The `replay --json` document for the log at `path` (JSON text, keys in log order)."""
    data = _read(path)
    if ima:
        from vroot.eventlog._ima import parse_ima_log
        from vroot.eventlog._ima_replay import replay_ima_log

        log = parse_ima_log(data, source=path)
        pcrs, count = replay_ima_log(log), len(log.entries)
    else:
        from vroot.eventlog._replay import replay_tcg_log
        from vroot.eventlog._tcg import parse_tcg_log

        log = parse_tcg_log(data, source=path)
        pcrs, count = replay_tcg_log(log), len(log.events)
    # Written by hand: bank names and hex need no escaping, and `json` costs ~8 ms of start-up.
    banks = ", ".join(
        f'"{alg.bank}": {{' + ", ".join(f'"{i}": "{value.hex()}"' for i, value in values.items()) + "}"
        for alg, values in pcrs.items()
    )
    return f'{{"pcrs": {{{banks}}}, "events": {count}}}'


def fast_replay(args: list[str]) -> int | None:
    """Serve `vroot eventlog replay FILE [--ima] --json` (args after `eventlog replay`) without Typer.

    Returns the exit code, or None when `args` is anything else or the replay fails: the caller
    then runs the full CLI, which reports errors the one canonical way.
    """
    flags = [a for a in args if a.startswith("-")]
    files = [a for a in args if not a.startswith("-")]
    if len(files) != 1 or "--json" not in flags or not set(flags) <= {"--json", "--ima"}:
        return None
    from vroot.errors import VrootError

    try:
        text = replay_json(files[0], ima="--ima" in flags)
    except VrootError:
        return None
    sys.stdout.write(text + "\n")
    return 0


def _abbrev(digest: bytes) -> str:
    return digest[:4].hex() + "…"


def _show_tcg(path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from vroot.eventlog import describe_event, event_type_name, parse_tcg_log

    log = parse_tcg_log(_read(path), source=path)
    kind = "crypto-agile" if log.crypto_agile else "SHA-1 legacy"
    banks = ", ".join(a.bank if hasattr(a, "bank") else f"0x{a:04x}" for a in log.algorithms)
    table = Table(title=f"{path}: {kind} TCG log, {len(log.events)} events, banks {banks}")
    for column in ("#", "PCR", "type", "digests", "description"):
        table.add_column(column, overflow="fold")
    for event in log.events:
        digests = " ".join(
            f"{alg.bank if hasattr(alg, 'bank') else f'0x{alg:04x}'}:{_abbrev(d)}"
            for alg, d in event.digests.items()
        )
        pcr = str(event.pcr) if event.pcr <= 0xFFFF else f"0x{event.pcr:x}"
        summary = describe_event(event).summary
        table.add_row(str(event.index), pcr, event_type_name(int(event.event_type)), digests, summary[:200])
    Console().print(table)


def _show_ima(path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from vroot.eventlog import parse_ima_log

    log = parse_ima_log(_read(path), source=path)
    table = Table(title=f"{path}: {log.format} IMA list, {len(log.entries)} entries")
    for column in ("#", "PCR", "template", "template hash", "file digest", "path"):
        table.add_column(column, overflow="fold")
    for index, entry in enumerate(log.entries):
        digest = "" if entry.file_digest is None else f"{entry.digest_alg}:{_abbrev(entry.file_digest)}"
        name = "(violation) " if entry.violation else ""
        table.add_row(
            str(index),
            str(entry.pcr),
            entry.template_name,
            _abbrev(entry.template_hash),
            digest,
            name + (entry.path if entry.path is not None else entry.raw_fields or ""),
        )
    Console().print(table)


def _build_app() -> typer.Typer:
    import typer

    eventlog_app = typer.Typer(
        help="Read, show and replay TCG and IMA measurement logs.", no_args_is_help=True
    )

    @eventlog_app.command()
    def show(
        file: str = typer.Argument(..., metavar="FILE", help="A TCG log (default) or an IMA list (--ima)."),
        ima: bool = typer.Option(False, "--ima", help="FILE is an IMA measurement list (ASCII or binary)."),
    ) -> None:
        """Show every event of a log as a table: index, PCR, type, digests, description."""
        (_show_ima if ima else _show_tcg)(file)

    @eventlog_app.command()
    def replay(
        file: str = typer.Argument(..., metavar="FILE", help="A TCG log (default) or an IMA list (--ima)."),
        ima: bool = typer.Option(False, "--ima", help="FILE is an IMA measurement list (ASCII or binary)."),
        json_out: bool = typer.Option(
            False, "--json", help="Print JSON: {pcrs: {bank: {index: hex}}, events: N}."
        ),
    ) -> None:
        """Replay a log to PCR values (TCG: PCRs 0-23 of each bank; IMA: the PCRs it extends)."""
        text = replay_json(file, ima=ima)
        if json_out:
            sys.stdout.write(text + "\n")
            return
        import json

        from rich.console import Console
        from rich.table import Table

        document = json.loads(text)
        table = Table(title=f"{file}: {document['events']} events replayed")
        for column in ("bank", "PCR", "value"):
            table.add_column(column, overflow="fold")
        for bank, values in document["pcrs"].items():
            for index, value in values.items():
                table.add_row(bank, index, value)
        Console().print(table)

    return eventlog_app


def __getattr__(name: str) -> object:
    if name == "app":
        built = _build_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
