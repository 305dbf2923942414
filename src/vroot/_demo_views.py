"""What the demo shows on screen: Rich tables of a host's boot chain, of joint verdicts as `vroot
attest` reports them, and of findings. Pure formatting: nothing here checks anything."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from vroot.tpm2 import HashAlg

__all__ = ["chain_table", "findings_table", "migrations_table", "placement_table", "step_ms", "verdict_table"]

_STYLE = {"trusted": "green", "untrusted": "red", "error": "yellow"}


def _verdict(text: str | None) -> str:
    value = (text or "-").lower()
    return f"[{_STYLE.get(value, 'white')}]{value.upper()}[/]"


def chain_table(chain: Any, bank: HashAlg) -> Table:
    """The stages of a verified host chain (`vroot.measure.verify_chain`), one row each."""
    table = Table(title="host boot chain, replayed from the host's evidence")
    for column in ("stage", "measured by", "PCR", f"{bank.bank} digest"):
        table.add_column(column)
    for stage in chain.stages:
        if stage.name.startswith("separator-") and stage.pcr != 0:
            continue
        name = "separators (PCR 0-7)" if stage.name.startswith("separator-") else stage.name
        digests = chain.digests[stage.name]
        digest = next(iter(digests.values())) if stage.kind.value == "ima" else digests[bank]
        table.add_row(name, stage.measured_by, str(stage.pcr), digest.hex()[:16] + "…")
    return table


def verdict_table(results: Mapping[str, Mapping[str, Any]], names: Mapping[str, str], *, title: str) -> Table:
    """One row per result (`GET /v1/agents/{id}/attestations/{task}` result documents): the agent,
    its verdict (for a VM the joint one), the host named in it with that host's result and verdict
    in the same deep quote, the EAR status, how many findings and on which PCRs."""
    table = Table(title=title)
    table.add_column("agent", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("host named (its result)", overflow="fold")
    table.add_column("EAR status", no_wrap=True)
    table.add_column("findings", no_wrap=True)
    for agent_id, result in results.items():
        host = "-"
        if result.get("host_id"):
            host = (
                f"{result['host_id']} #{result.get('host_result_id')} {_verdict(result.get('host_verdict'))}"
            )
        findings = list(result.get("findings") or ())
        pcrs = sorted({int(f["pcr"]) for f in findings if f.get("pcr") is not None})
        where = f" (PCR {', '.join(map(str, pcrs))})" if pcrs else ""
        table.add_row(names.get(agent_id, agent_id), _verdict(result["verdict"]), host,
                      str(result.get("status") or "-"), f"{len(findings)}{where}" if findings else "none")  # fmt: skip
    return table


def findings_table(findings: list[Mapping[str, Any]], *, title: str) -> Table:
    """Findings as the server recorded them (id, severity, PCR, event index, message)."""
    table = Table(title=title)
    for column in ("severity", "ID", "PCR", "event", "message"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(str(f.get("severity", "")), str(f.get("id", "")),
                      "" if f.get("pcr") is None else str(f["pcr"]),
                      "" if f.get("event_index") is None else str(f["event_index"]), str(f.get("message", "")))  # fmt: skip
    return table


def placement_table(placement: Mapping[str, Any], names: Mapping[str, str], *, title: str) -> Table:
    """`GET /v1/placement/{vm}`: the host chosen, then every host refused with its code and reason."""
    table = Table(title=title)
    for column in ("host", "decision", "code", "why"):
        table.add_column(column, overflow="fold")
    destination = placement.get("destination")
    if destination:
        qualifying = len(placement.get("candidates") or ())
        table.add_row(names.get(destination, destination), "[green]CHOSEN[/]", "-",
                      f"passes every rule; the best of {qualifying} qualifying")  # fmt: skip
    for r in placement.get("refusals") or ():
        table.add_row(names.get(r["host"], r["host"]), "[red]refused[/]", r["code"], r["reason"])
    return table


STEPS = ("prepare", "export", "import", "finalize")


def step_ms(migration: Mapping[str, Any]) -> dict[str, float | None]:
    """Each step's time in ms (None: not finished) of a `GET /v1/migrations/{id}` document."""
    took = {s["name"]: s.get("ms") for s in migration.get("steps") or ()}
    return {name: took.get(name) for name in STEPS}


def migrations_table(migrations: list[Mapping[str, Any]], names: Mapping[str, str], *, title: str) -> Table:
    """One row per migration: the VM, source → destination, each step's ms, their sum, the state."""
    table = Table(title=title)
    for column in ("VM", "from → to", *(f"{s} ms" for s in STEPS), "total ms", "state"):
        table.add_column(column, no_wrap=True)
    for m in migrations:
        ms = step_ms(m)
        cells = ["-" if v is None else f"{v:.0f}" for v in ms.values()]
        total = sum(v for v in ms.values() if v is not None)
        state = m["state"]
        style = "green" if state == "completed" else "red"
        route = f"{names.get(m['source'], m['source'])} → {names.get(m['destination'], m['destination'])}"
        table.add_row(names.get(f"vm:{m['vm_uuid']}", m["vm_uuid"]), route, *cells, f"{total:.0f}",
                      f"[{style}]{state}[/]")  # fmt: skip
    return table
