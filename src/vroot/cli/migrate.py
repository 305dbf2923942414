"""`vroot migrate VM [--to HOST] [--dry-run] [--wait S]` and `vroot host drain HOST` (issue 5;
MC-F1, MC-F3, MC-S4).

`vroot migrate` asks the server's migration controller to move a VM's vTM: to `--to HOST`, or,
without it, to the best host the policy allows. With `--dry-run` it only shows where the VM could
go and why every other host is refused. Otherwise it follows the migration until it completes or
is aborted, printing each step's time. Exit 0 completed, 1 aborted or refused (the reasons on one
line), 2 bad input or no answer within --wait.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

POLL = 0.2


def _client(server: str, token: str | None, ca: Path | None):  # noqa: ANN202
    from vroot.agent import ServerClient
    from vroot.errors import InvalidInput

    token = token or os.environ.get("VROOT_TOKEN")
    if not token:
        raise InvalidInput("give the operator token with --token or $VROOT_TOKEN")
    return ServerClient(server, ca_certificate=ca, token=token)


def _vm(text: str) -> str:
    import uuid

    from vroot.errors import InvalidInput

    try:
        return str(uuid.UUID(text.removeprefix("vm:")))
    except ValueError:
        raise InvalidInput(f"VM must be a UUID (or vm:UUID), got {text!r}") from None


def _host(text: str) -> str:
    return text if text.startswith("host:") else f"host:{text}"


def steps_table(m: dict[str, Any]) -> str:
    lines = [f"migration {m['id']}: VM {m['vm_uuid']} {m['source']} → {m['destination']}  [{m['state'].upper()}]"]
    for s in m["steps"]:
        took = "…" if s["ms"] is None else f"{s['ms']:.1f} ms"
        lines.append(f"  {s['name']:<9} {took:>12}  {s['detail']}")
    if m.get("error"):
        lines.append(f"  reason: {m['error']}")
    return "\n".join(lines)


def migrate(
    vm: str = typer.Argument(..., metavar="VM", help="The VM's UUID (or vm:UUID)."),
    to: str | None = typer.Option(None, "--to", help="The destination host (default: the best the policy allows)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show where the VM could go and why not elsewhere."),
    server: str = typer.Option(..., "--server", help="The server's https:// URL."),
    token: str | None = typer.Option(None, "--token", help="Operator token (default: $VROOT_TOKEN)."),
    ca: Path | None = typer.Option(None, "--ca", help="The server's operations CA (default: the system's CAs)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    wait: float = typer.Option(120.0, "--wait", min=0.0, help="Seconds to follow the migration."),
) -> None:
    """Move a VM's vTM to a host that has just proven itself trustworthy."""
    from vroot.errors import Conflict, Unavailable, VrootError

    vm_uuid, dest = _vm(vm), (_host(to) if to else None)
    try:
        with _client(server, token, ca) as client:
            if dry_run:
                p = client.get(f"/v1/placement/{vm_uuid}" + (f"?to={dest}" if dest else ""))
                _print(p, as_json, lambda p: "\n".join(
                    [f"VM {vm_uuid} on {p['source']}: {p['explanation']}"]
                    + [f"  {r['host']:<24} refused: {r['reason']}" for r in p["refusals"]]))  # fmt: skip
                raise typer.Exit(0 if p["destination"] else 1)
            try:
                m = client.post("/v1/migrations", {"vm_uuid": vm_uuid, **({"to": dest} if dest else {})})
            except Conflict as exc:
                print(f"vroot: refused: {exc}", file=sys.stderr)
                raise typer.Exit(1) from None
            deadline = time.monotonic() + wait
            while m["state"] not in ("completed", "aborted"):
                if time.monotonic() >= deadline:
                    raise Unavailable(f"migration {m['id']} is still {m['state']} after {wait:g} s")
                time.sleep(POLL)
                m = client.get(f"/v1/migrations/{m['id']}")
    except VrootError as exc:
        print(f"vroot: error: {exc.diagnostics()}", file=sys.stderr)
        raise typer.Exit(2) from None
    _print(m, as_json, steps_table)
    raise typer.Exit(0 if m["state"] == "completed" else 1)


def drain(
    host: str = typer.Argument(..., metavar="HOST", help="host:ID or a bare host id."),
    server: str = typer.Option(..., "--server", help="The server's https:// URL."),
    token: str | None = typer.Option(None, "--token", help="Operator token (default: $VROOT_TOKEN)."),
    ca: Path | None = typer.Option(None, "--ca", help="The server's operations CA (default: the system's CAs)."),
    undo: bool = typer.Option(False, "--undo", help="Take migrations again (end the drain)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Drain a host (on the RA server): nothing migrates to it, and each of its VMs moves to its best host."""
    from vroot.errors import VrootError

    agent = _host(host)
    try:
        with _client(server, token, ca) as client:
            if undo:
                client.request("DELETE", f"/v1/agents/{agent}/drain")
                print(f"{agent} takes migrations again")
                return
            got = client.post(f"/v1/agents/{agent}/drain")
    except VrootError as exc:
        print(f"vroot: error: {exc.diagnostics()}", file=sys.stderr)
        raise typer.Exit(2) from None
    _print(got, as_json, lambda g: "\n".join(
        [f"{g['host']} draining: {len(g['migrations'])} migrations started"]
        + [f"  migration {m}" for m in g["migrations"]]
        + [f"  VM {s['vm_uuid']} stays: {s['reason']}" for s in g["stranded"]]))  # fmt: skip
    raise typer.Exit(1 if got["stranded"] else 0)


def _print(doc: dict[str, Any], as_json: bool, human: Any) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(human(doc))
