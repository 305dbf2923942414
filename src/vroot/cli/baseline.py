"""`vroot baseline`: learn, show and apply reference values (the baseline library, offline).

    vroot baseline learn --tcg binary_bios_measurements [--ima ima.bin] --name hosts --version 1 --out hosts.yaml
    vroot baseline show hosts.yaml
    vroot baseline appraise --baseline hosts.yaml --policy policy.yaml --tcg LOG [--ima LOG] [--json]

`appraise` here judges logs as given: without a quote nothing proves that a TM measured them, so
it answers "would this boot be accepted?", not "is this machine trusted?" (that is `vroot attest`).
Exit codes: 0 trusted, 1 untrusted (findings printed), 2 unreadable input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(
    help="Learn, show and apply baselines (reference values) and policies.", no_args_is_help=True
)


def _read(path: Path) -> bytes:
    from vroot.errors import InvalidInput

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None


def _logs(tcg: Path, ima: Path | None):  # noqa: ANN202
    from vroot.eventlog import parse_ima_log, parse_tcg_log

    tcg_log = parse_tcg_log(_read(tcg), source=str(tcg))
    ima_log = parse_ima_log(_read(ima), source=str(ima)) if ima else None
    return tcg_log, ima_log


@app.command()
def learn(
    tcg: Path = typer.Option(..., "--tcg", help="A known-good machine's TCG event log."),
    ima: Path | None = typer.Option(
        None, "--ima", help="Its IMA list (ASCII or binary), for the IMA allowlist."
    ),
    name: str = typer.Option(..., "--name", help="Baseline name (e.g. the host group)."),
    version: str = typer.Option(..., "--version", help="Baseline version."),
    out: Path | None = typer.Option(None, "--out", help="Write the manifest here (default: stdout)."),
    as_json: bool = typer.Option(False, "--json", help="A JSON manifest instead of YAML."),
) -> None:
    """Learn a baseline from a known-good machine's logs and write it as a manifest."""
    from vroot.baseline import dump_manifest, learn_baseline

    tcg_log, ima_log = _logs(tcg, ima)
    baseline = learn_baseline(tcg_log=tcg_log, ima_log=ima_log, name=name, version=version)
    data = dump_manifest(baseline, format="json" if as_json else "yaml")
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)
        print(f"baseline {name} v{version}: {len(baseline.reference_values)} reference values -> {out}")


@app.command()
def show(manifest: Path = typer.Argument(..., metavar="MANIFEST")) -> None:
    """Summarize a baseline manifest: reference values per PCR, IMA allowlist size."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    from vroot.baseline import load_manifest

    baseline = load_manifest(_read(manifest))
    table = Table(title=f"baseline {baseline.name} v{baseline.version}")
    for column in ("PCR", "reference values", "components"):
        table.add_column(column)
    per_pcr = Counter(v.pcr for v in baseline.reference_values)
    for pcr in sorted(per_pcr):
        components = sorted({v.component for v in baseline.reference_values if v.pcr == pcr})
        table.add_row(str(pcr), str(per_pcr[pcr]), ", ".join(components)[:80])
    Console().print(table)
    if baseline.ima is not None:
        print(f"IMA allowlist: {len(baseline.ima.digests)} paths")


@app.command()
def appraise(
    baseline_file: Path = typer.Option(..., "--baseline", help="Baseline manifest (YAML or JSON)."),
    policy_file: Path = typer.Option(..., "--policy", help="Policy manifest (YAML or JSON)."),
    tcg: Path = typer.Option(..., "--tcg", help="The TCG event log to judge."),
    ima: Path | None = typer.Option(None, "--ima", help="Its IMA list."),
    as_json: bool = typer.Option(False, "--json", help="Print the appraisal as JSON."),
) -> None:
    """Appraise logs against a baseline under a policy (offline: the logs are not proven by a quote)."""
    from datetime import UTC, datetime

    from vroot.baseline import AppraisalInput, load_manifest, load_policy
    from vroot.baseline import appraise as run_appraisal
    from vroot.eventlog import replay_ima_log, replay_tcg_log, verify_replay

    baseline = load_manifest(_read(baseline_file))
    policy = load_policy(_read(policy_file))
    tcg_log, ima_log = _logs(tcg, ima)
    replayed_pcrs = replay_tcg_log(tcg_log)
    proven = verify_replay(tcg_log, claimed=replayed_pcrs)
    pcrs = {alg: dict(values) for alg, values in replayed_pcrs.items()}
    if ima_log is not None:
        for alg, values in replay_ima_log(ima_log, banks=tuple(pcrs)).items():
            pcrs[alg].update(values)
    now = datetime.now(UTC)
    evidence = AppraisalInput.from_replayed_log(
        proven, pcrs=pcrs, ima_entries=ima_log.entries if ima_log else None, time=now
    )
    result = run_appraisal(evidence=evidence, baseline=baseline, policy=policy, now=now)
    if as_json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(
            f"{result.verdict}: baseline {result.baseline_name} v{result.baseline_version}, policy {result.policy_group}"
        )
        for finding in result.findings:
            where = f" PCR {finding.pcr}" if finding.pcr is not None else ""
            event = f" event {finding.event_index}" if finding.event_index is not None else ""
            print(f"  {finding.severity:7} {finding.id}{where}{event}: {finding.message}")
    if result.verdict != "trusted":
        raise typer.Exit(1)
