"""`vroot attest HOST|VM --server URL --token TOKEN [--ca PEM] [--json] [--wait SECONDS]`, and
`vroot attest server --server URL --ca PEM --manufacturer-ca PEM [--baseline B --policy P]` (MC-S2,
`vroot.cli.attest_server`).

Asks the server to attest a host or a VM now (RA-2), waits for the result and prints it: the
verdict, the policy it was appraised under, the AR4SI vector of the signed result, and every
finding. A VM (`vm:<uuid>`, or a bare UUID) is attested through a deep quote of the host it runs
on (RA-4): its verdict is the joint one, and the host that vouched for it (with that host's own
verdict in the same deep quote) is named; the host's findings appear as `host.<id>`. Exit 0
when trusted, 1 when untrusted, 2 for bad input, a server or agent that cannot be reached, no
result within --wait, or a result with verdict "error" (nothing was appraised).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import typer

EXIT = {"trusted": 0, "untrusted": 1}
POLL = 0.25


def _table(result: dict[str, Any]) -> str:
    vector = result.get("trustworthiness_vector") or {}
    tiers = {2: "affirming", 32: "warning", 96: "contraindicated"}
    rows = [
        ("agent", result["agent_id"]),
        ("verdict", result["verdict"].upper()),
        ("result", f"#{result['id']} at {result['created_at']}"),
        *([("host", f"{result['host_id']} (its result #{result.get('host_result_id')}: "
                    f"{str(result.get('host_verdict') or '-').upper()}; the verdict above is the joint one)")]
          if result.get("host_id") else []),
        ("policy", result.get("policy_id") or "-"),
        ("EAR status", result.get("status") or "-"),
        ("vector", ", ".join(f"{k} {tiers.get(v, v)}" for k, v in sorted(vector.items())) or "-"),
        ("counters", f"reset {result.get('reset_count')}, restart {result.get('restart_count')}"
                     + (" (rebooted since the previous result)" if result.get("rebooted") else "")),
    ]  # fmt: skip
    lines = [f"{name:<11} {value}" for name, value in rows]
    findings = result.get("findings") or []
    if not findings:
        lines.append("findings    none")
        return "\n".join(lines)
    lines.append(f"findings    {len(findings)}")
    head = ("SEVERITY", "ID", "PCR", "EVENT", "MESSAGE")
    cells = [(f["severity"], f["id"], "" if f.get("pcr") is None else str(f["pcr"]),
              "" if f.get("event_index") is None else str(f["event_index"]), f["message"]) for f in findings]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *cells]) for i in range(4)]
    for row in [head, *cells]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return "\n".join(lines)


def agent_id_of(text: str) -> str:
    """The agent id a user means: `host:ID`/`vm:UUID` as given (a VM UUID made canonical), a bare
    UUID as `vm:<uuid>`, anything else as `host:<text>`."""
    prefix, sep, rest = text.partition(":")
    candidate = rest if sep and prefix == "vm" else (None if sep else text)
    if candidate is not None:
        try:
            return f"vm:{uuid.UUID(candidate)}"
        except ValueError:
            if sep:
                return text  # vm:<not a uuid>: the server says it is unknown
    return text if sep else f"host:{text}"


def attest(
    agent_id: str = typer.Argument(
        ..., metavar="HOST|VM|server",
        help="host:ID or a bare host id; vm:UUID or a bare VM UUID (joint verdict); server: the server's own platform.",
    ),
    server: str = typer.Option(..., "--server", help="The server's https:// URL."),
    token: str | None = typer.Option(None, "--token", help="Operator token (default: $VROOT_TOKEN)."),
    ca: Path | None = typer.Option(None, "--ca", help="The server's operations CA (default: the system's CAs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    wait: float = typer.Option(60.0, "--wait", min=0.0, help="Seconds to wait for the agent's answer."),
    manufacturer_ca: list[Path] = typer.Option(
        [], "--manufacturer-ca", help="`vroot attest server`: the TM manufacturer's CA (PEM, repeatable)."
    ),
    baseline: Path | None = typer.Option(None, "--baseline", help="`vroot attest server`: baseline manifest."),
    policy: Path | None = typer.Option(None, "--policy", help="`vroot attest server`: policy manifest."),
) -> None:
    """Attest a host or a VM now and print its verdict and findings (exit 0 trusted, 1 untrusted).
    `vroot attest server` checks the platform of the server itself (MC-S2), with no token."""
    from vroot.agent import ServerClient
    from vroot.errors import InvalidInput, Unavailable, VerificationError, VrootError

    if agent_id == "server":
        from vroot.cli.attest_server import attest_server

        try:
            code = attest_server(server=server, ca=ca, manufacturer_cas=manufacturer_ca, baseline=baseline,
                                 policy=policy, as_json=as_json)  # fmt: skip
        except VerificationError as exc:
            print(f"vroot: untrusted: {exc.diagnostics()}", file=sys.stderr)
            raise typer.Exit(1) from None
        raise typer.Exit(code)

    token = token or os.environ.get("VROOT_TOKEN")
    if not token:
        raise InvalidInput("give the operator token with --token or $VROOT_TOKEN")
    agent_id = agent_id_of(agent_id)
    try:
        with ServerClient(server, ca_certificate=ca, token=token) as client:
            task = client.post(f"/v1/agents/{agent_id}/attestations")
            deadline = time.monotonic() + wait
            while task.get("result") is None:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"no result from {agent_id} within {wait:g} s (is its agent running?)")
                time.sleep(POLL)
                task = client.get(f"/v1/agents/{agent_id}/attestations/{task['task_id']}")
    except VrootError as exc:  # no verdict: an unknown agent, a refused token, no answer
        print(f"vroot: error: {exc.diagnostics()}", file=sys.stderr)
        raise typer.Exit(2) from None
    result = task["result"]
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        typer.echo(_table(result))
    raise typer.Exit(EXIT.get(result["verdict"], 2))
