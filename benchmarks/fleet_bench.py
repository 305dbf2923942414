"""Fleet benchmark of `vroot server` (issue 4, Performance): one server on this 2-core machine,
5,000 simulated hosts attested every 60 s; verdict latency p50/p95/p99, throughput, errors and CPU,
on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/fleet_bench.py [--agents 5000] [--minutes 5] [--db sqlite|postgresql|both]
                                               [--profile] [--warmup 180] [--wait 25] ...

Per database, one after the other:

1. a fresh server directory (`init_server`: PCA, operations CA, TLS, settings below) trusting a
   test manufacturer CA; SQLite is the server's default file, PostgreSQL a throwaway database on
   the local cluster (127.0.0.1:5432, user postgres; `--pg` to change), dropped at the end;
2. the server in its own process: `vroot server run DIR` (with `--profile`, the same through
   benchmarks/_fleet_server.py, which samples its stacks during the measured window);
3. the baselines of the fleet's machine types, learnt from their logs (`_fleet_sim`), uploaded;
4. the load generator in another process (benchmarks/_fleet_load.py, asyncio + httpx): it makes
   the simulated hosts (software EK with an EK certificate from the manufacturer CA, AK, vTM-manager
   key certified by the AK) and enrolls every one through the real endpoints (credential activation
   in software), then the operator puts each into its machine type's policy group;
5. the group policies are uploaded, and the hosts start their task loops, spread over `--ramp`
   seconds so that their 60-s phases are spread too; the server's scheduler attests each host every
   `attestation_interval_seconds`: a single-use nonce in an `attest` task, which the host's
   long-poll receives; the host answers with its evidence; the server verifies, appraises
   (baseline + policy, incremental IMA) and records a signed result;
6. after `--warmup` seconds, the measured window of `--minutes`: every attest task the server
   CREATED in the window is looked up in the database afterwards. Verdict latency is the task's
   finished_at - created_at (server clock: from the nonce's issue, with the task, to the result
   recorded and the task closed). Errors: tasks of the window not done, results not "trusted",
   and the hosts' HTTP errors in the window. CPU from /proc (utime + stime) over the window: the
   server process, the PostgreSQL processes (backends of the benchmark's database and the cluster's
   background processes), the load generator, and everything else on the machine;
7. every process started is stopped by its PID; temporary files are removed.

The load generator runs at `--nice` (default 10) so that, when the two cores are contended, the
server process and PostgreSQL win; its own event-loop lag is reported (a late host is a slow
agent, visible in the latency breakdown, not the server's fault or merit).

Output: a markdown table on stdout and in benchmarks/out/fleet-results.md; with `--profile` (or
when the goal is missed and `--profile` was given), where the server's time goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _fleet_sim import make_machine_types, policy_manifest  # noqa: E402

from vroot.pki import create_ca, save_ca  # noqa: E402
from vroot.server import init_server  # noqa: E402

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("VROOT_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
TICK = os.sysconf("SC_CLK_TCK")
GOAL_P99 = 1.0


# -- processes and CPU ----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of process `pid` so far, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, *, timeout: float = 30.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL it if it does not stop."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- PostgreSQL -----------------------------------------------------------------------------------


class Postgres:
    """A throwaway database on the local cluster, and the CPU of the cluster's processes."""

    def __init__(self, admin: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.admin = admin
        self.conn = psycopg.connect(f"{admin} dbname=postgres", autocommit=True, connect_timeout=5)
        self.name = f"vroot_fleet_{os.urandom(6).hex()}"
        self.conn.execute(f'CREATE DATABASE "{self.name}"')
        params = psycopg.conninfo.conninfo_to_dict(admin)
        self.url = (f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
                    f"{params.get('port', '5432')}/{self.name}")  # fmt: skip

    def pids(self) -> set[int]:
        """The backends of our database and the cluster's background processes (not other databases'
        sessions, nor this admin connection)."""
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE (datname = %s OR datname IS NULL) AND pid <> pg_backend_pid()",
            (self.name,),
        ).fetchall()
        return {r[0] for r in rows}

    def drop(self) -> None:
        try:
            self.conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            self.conn.close()


@dataclass
class CpuMark:
    wall: float
    machine: float
    server: float
    loadgen: float
    pg: dict[int, float] = field(default_factory=dict)


def cpu_mark(server: int, loadgen: int, pg: Postgres | None) -> CpuMark:
    pg_cpu = {}
    if pg is not None:
        for pid in pg.pids():
            got = proc_cpu(pid)
            if got is not None:
                pg_cpu[pid] = got
    return CpuMark(wall=time.monotonic(), machine=machine_busy(), server=proc_cpu(server) or 0.0,
                   loadgen=proc_cpu(loadgen) or 0.0, pg=pg_cpu)  # fmt: skip


def cpu_between(a: CpuMark, b: CpuMark) -> dict[str, float]:
    """Cores used on average over the window (1.0 = one core busy all the time)."""
    wall = b.wall - a.wall
    pg = sum(v - a.pg.get(pid, 0.0) for pid, v in b.pg.items())  # a backend new in the window: all of it
    server, loadgen = b.server - a.server, b.loadgen - a.loadgen
    machine = b.machine - a.machine
    return {"server": server / wall, "postgresql": pg / wall, "loadgen": loadgen / wall,
            "other": max(0.0, machine - server - pg - loadgen) / wall, "machine": machine / wall}  # fmt: skip


# -- statistics -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def _dt(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def window_tasks(database_url: str, start: float, end: float) -> list[dict[str, Any]]:
    """Every attest task the server created in [start, end): id, state, created, finished, verdict."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)  # sqlite:///... or postgresql+psycopg://... as init_server wrote it
    lo = datetime.fromtimestamp(start, UTC)
    hi = datetime.fromtimestamp(end, UTC)
    if engine.dialect.name == "sqlite":
        lo, hi = lo.replace(tzinfo=None), hi.replace(tzinfo=None)
    query = text("SELECT id, agent_id, state, created_at, finished_at, result FROM tasks "
                 "WHERE kind = 'attest' AND created_at >= :lo AND created_at < :hi")  # fmt: skip
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"lo": lo, "hi": hi}).all()
    finally:
        engine.dispose()
    out = []
    for task_id, agent_id, state, created, finished, result in rows:
        if isinstance(result, str):
            result = json.loads(result)
        out.append({"id": task_id, "agent": agent_id, "state": state, "created": _dt(created),
                    "finished": None if finished is None else _dt(finished),
                    "verdict": (result or {}).get("verdict") if isinstance(result, dict) else None})  # fmt: skip
    return out


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Options:
    agents: int
    minutes: float
    warmup: float
    ramp: float
    grace: float
    wait: float
    poll_interval: float
    scheduler_interval: float
    interval: int
    machine_types: int
    ima_growth: int
    enroll_concurrency: int
    nice: int
    profile: bool
    pg_admin: str
    keep: bool
    what_if: tuple[str, ...] = ()


def server_options(o: Options) -> dict[str, object]:
    return {"attestation_interval_seconds": o.interval, "scheduler_interval_seconds": o.scheduler_interval,
            "poll_interval_seconds": o.poll_interval, "nonce_ttl_seconds": 120, "task_lease_seconds": 120,
            "max_wait_seconds": 60.0}  # fmt: skip


def _wait_healthy(url: str, ctx: ssl.SSLContext, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/health", verify=ctx, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer /v1/health:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _read_event(proc: subprocess.Popen, want: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited (code {proc.wait()}) before {want!r}")
        doc = json.loads(line)
        if doc.get("event") == want:
            return doc


def run_one(db: str, o: Options) -> dict[str, Any]:
    """One full run on `db` ("sqlite" or "postgresql"); the figures."""
    tmp = Path(tempfile.mkdtemp(prefix=f"vroot-fleet-{db}-"))
    pg = Postgres(o.pg_admin) if db == "postgresql" else None
    server = loadgen = None
    try:
        now = datetime.now(UTC)
        maker = create_ca(common_name="vroot fleet benchmark TPM manufacturer CA", now=now - timedelta(days=30))
        save_ca(maker, tmp / "manufacturer")
        port = free_port()
        init = init_server(tmp / "server", now=now - timedelta(minutes=5), rng=os.urandom,
                           database=pg.url if pg else None, manufacturer_cas=[tmp / "manufacturer"],
                           listen=f"127.0.0.1:{port}", options=server_options(o))  # fmt: skip
        settings = init.settings
        url = f"https://127.0.0.1:{port}"
        ca_file = settings.directory / "tls" / "ca.pem"
        ctx = ssl.create_default_context(cafile=str(ca_file))
        log = tmp / "server.log"
        profile_path = tmp / "profile.json"
        if o.profile or o.what_if:
            cmd = [sys.executable, str(HERE / "_fleet_server.py"), str(settings.directory), str(profile_path)]
        else:
            cmd = [str(BIN / "vroot"), "server", "run", str(settings.directory), "--log-level", "warning"]
        env = {**os.environ, "VROOT_FLEET_WHAT_IF": ",".join(o.what_if)}
        with log.open("wb") as log_file:
            server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _wait_healthy(url, ctx, server, log)
        operator = httpx.Client(base_url=url, verify=ctx, headers={"Authorization": f"Bearer {init.operator_token}"},
                                timeout=60)  # fmt: skip
        machines = make_machine_types(o.machine_types)
        for m in machines:
            r = operator.put(f"/v1/baselines/{m.name}/1", content=m.baseline_manifest(),
                             headers={"content-type": "application/json"})  # fmt: skip
            r.raise_for_status()
        config = {"url": url, "ca": str(ca_file), "token": init.operator_token,
                  "manufacturer_ca": str(tmp / "manufacturer"), "agents": o.agents,
                  "machine_types": o.machine_types, "workdir": str(tmp / "load"), "wait": o.wait,
                  "enroll_concurrency": o.enroll_concurrency, "ima_growth": o.ima_growth, "nice": o.nice}  # fmt: skip
        (tmp / "load.json").write_text(json.dumps(config))
        with (tmp / "load.log").open("wb") as load_log:
            loadgen = subprocess.Popen([sys.executable, str(HERE / "_fleet_load.py"), str(tmp / "load.json")],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=load_log, text=True,
                                       cwd=ROOT)  # fmt: skip
        print(f"[{db}] server pid {server.pid}, load generator pid {loadgen.pid}; enrolling {o.agents} hosts ...",
              file=sys.stderr, flush=True)  # fmt: skip
        enrolled = _read_event(loadgen, "enrolled")
        print(f"[{db}] enrolled {enrolled['agents']} in {enrolled['seconds']:.0f} s "
              f"({enrolled['failures']} failures {enrolled['first_failures']})", file=sys.stderr, flush=True)  # fmt: skip
        for m in machines:
            operator.put(f"/v1/policies/{m.name}", content=policy_manifest(m),
                         headers={"content-type": "application/yaml"}).raise_for_status()  # fmt: skip
        start = time.time() + 2.0
        w0 = start + o.warmup
        w1 = w0 + o.minutes * 60
        stop = w1 + o.grace
        assert loadgen.stdin is not None
        loadgen.stdin.write(json.dumps({"start": start, "ramp": o.ramp, "stop": stop}) + "\n")
        loadgen.stdin.flush()
        print(f"[{db}] hosts start over {o.ramp:.0f} s; warm-up {o.warmup:.0f} s, then {o.minutes:g} min measured",
              file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(max(0.0, w0 - time.time()))
        if o.profile:
            server.send_signal(signal.SIGUSR1)
        mark0 = cpu_mark(server.pid, loadgen.pid, pg)
        time.sleep(max(0.0, w1 - time.time()))
        mark1 = cpu_mark(server.pid, loadgen.pid, pg)
        if o.profile:
            server.send_signal(signal.SIGUSR2)
        cpu = cpu_between(mark0, mark1)
        done = _read_event(loadgen, "done")
        loadgen.wait(60)
        operator.close()
        stop_process(server)
        tasks = window_tasks(settings.database_url, w0, w1)
        records = [json.loads(line) for line in Path(done["records"]).read_text().splitlines()]
        summary = json.loads(Path(done["summary"]).read_text())
        profile = json.loads(profile_path.read_text()) if o.profile and profile_path.exists() else None
        result = figures(db, o, tasks, records, summary, cpu, w0, w1, enrolled, profile)
        result["server_log_tail"] = log.read_text(errors="replace")[-2000:]
        return result
    finally:
        for proc in (loadgen, server):
            if proc is not None:
                stop_process(proc)
        if pg is not None:
            pg.drop()
        if o.keep:
            print(f"[{db}] kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def figures(db: str, o: Options, tasks: list[dict], records: list[dict], summary: dict, cpu: dict[str, float],
            w0: float, w1: float, enrolled: dict, profile: dict | None) -> dict[str, Any]:  # fmt: skip
    """The figures of one run. Latency percentiles are over EVERY attestation created in the window:
    one still unfinished when the run ended counts as infinitely late (it is never left out)."""
    window = w1 - w0
    done = [t for t in tasks if t["state"] == "done" and t["finished"] is not None]
    latency = [t["finished"] - t["created"] for t in done] + [float("inf")] * (len(tasks) - len(done))
    verdicts = Counter(t["verdict"] for t in done)
    by_id = {r["task"]: r for r in records}
    parts: dict[str, list[float]] = {"delivery": [], "agent": [], "server": [], "answer": []}
    for t in done:
        r = by_id.get(t["id"])
        if r is None or r.get("lease_until") is None:
            continue
        leased = r["lease_until"] - 120.0  # task_lease_seconds
        parts["delivery"].append(leased - t["created"])
        parts["agent"].append(r["sent"] - r["received"])
        parts["server"].append(t["finished"] - r["sent"])
        if r.get("status") == 200:
            parts["answer"].append(r["answered"] - t["finished"])
    in_window = {t["id"] for t in tasks}
    unanswered = {r["task"] for r in records if r["task"] in in_window and r.get("status") != 200}
    failed = {t["id"] for t in tasks if t["state"] != "done"} | {t["id"] for t in done if t["verdict"] != "trusted"}
    poll_errors = Counter(kind for at, kind in summary.get("errors", ()) if w0 <= at < w1 and kind.startswith("poll"))
    detail = {"not done (failed, or still open at the end)": sum(1 for t in tasks if t["state"] != "done"),
              "verdict not trusted": sum(n for v, n in verdicts.items() if v != "trusted"),
              "host got no answer to its result (timeout/HTTP error)": len(unanswered)}  # fmt: skip
    return {
        "db": db,
        "agents": enrolled["agents"],
        "enroll_seconds": enrolled["seconds"],
        "enroll_failures": enrolled["failures"],
        "window": window,
        "created": len(tasks),
        "done": len(done),
        "states": dict(Counter(t["state"] for t in tasks)),
        "verdicts": dict(verdicts),
        "errors": len(failed | unanswered),
        "error_detail": detail,
        "poll_errors": dict(poll_errors),
        "throughput": sum(1 for t in done if w0 <= t["finished"] < w1) / window,
        "expected": o.agents / o.interval,
        "latency": {q: pct(latency, q) for q in (50, 95, 99, 100)},
        "parts": {k: {q: pct(v, q) for q in (50, 99)} for k, v in parts.items()},
        "cpu": cpu,
        "loadgen": {k: v for k, v in summary.items() if k != "errors"},
        "profile": profile,
    }


# -- output ---------------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    if v == float("inf"):
        return "unfinished"
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def _cores(v: float) -> str:
    return f"{v:.2f} cores ({v * 50:.0f} % of 2)"


def render(results: list[dict[str, Any]], o: Options) -> str:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    head = ("| | " + " | ".join(f"{names[r['db']]}, {r['agents']:,} hosts" for r in results) + " |\n|---|"
            + "---|" * len(results) + "\n")  # fmt: skip

    def row(label: str, fn) -> str:  # noqa: ANN001
        return f"| {label} | " + " | ".join(fn(r) for r in results) + " |\n"

    out = ["# vroot server: fleet benchmark (issue 4, Performance)\n\n",
           f"Simulated hosts, each attested every {o.interval} s by the server's scheduler; measured "
           f"window {o.minutes:g} min after {o.warmup:.0f} s of warm-up. Goal: p99 verdict latency < 1 s.\n\n",
           f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
           f"{platform.python_version()}; code: {os.environ.get(SOURCE_ENV, 'the working tree')}. Server settings: attestation_interval_seconds={o.interval}, "
           f"scheduler_interval_seconds={o.scheduler_interval:g}, poll_interval_seconds={o.poll_interval:g}, "
           f"max_wait_seconds=60, nonce_ttl_seconds=120; hosts long-poll with wait={o.wait:g} s; "
           f"load generator at nice {o.nice}.\n\n",
           *([f"**What-if run: the server process was patched ({', '.join(o.what_if)}; see "
              "benchmarks/_fleet_server.py): these are not the committed server's figures.**\n\n"] if o.what_if else []),
           head]  # fmt: skip
    out.append(row("hosts enrolled (through the endpoints)", lambda r: f"{r['agents']} in {r['enroll_seconds']:.0f} s"
                   + (f", {r['enroll_failures']} failed" if r["enroll_failures"] else "")))  # fmt: skip
    out.append(row("attestations created in the window", lambda r: str(r["created"])))
    out.append(row("verdicts recorded, trusted", lambda r: f"{r['done']}, {r['verdicts'].get('trusted', 0)}"))
    out.append(row("throughput (verdicts/s; fleet needs)", lambda r: f"{r['throughput']:.1f} ({r['expected']:.1f})"))
    out.append(row("attestations with an error", lambda r: str(r["errors"]) + ("" if not r["errors"] else " (" + ", ".join(
        f"{k}: {v}" for k, v in r["error_detail"].items() if v) + ")")))  # fmt: skip
    out.append(row("hosts' poll errors in the window", lambda r: ", ".join(
        f"{k.removeprefix('poll: ')}: {v}" for k, v in r["poll_errors"].items()) or "0"))  # fmt: skip
    for q, label in ((50, "p50"), (95, "p95"), (99, "p99"), (100, "max")):
        out.append(row(f"verdict latency {label}", lambda r, q=q: _ms(r["latency"][q])))
    out.append(row("**goal: p99 < 1 s**", lambda r: "met" if (r["latency"][99] or 99) < GOAL_P99 else "**missed**"))
    for key, label in (("delivery", "task created → leased to the host"), ("agent", "host builds evidence"),
                       ("server", "result posted → verdict recorded"), ("answer", "recorded → host has the answer")):  # fmt: skip
        out.append(row(f"… {label} p50 / p99",
                       lambda r, k=key: f"{_ms(r['parts'][k][50])} / {_ms(r['parts'][k][99])}"))  # fmt: skip
    out.append(row("CPU: vroot server process", lambda r: _cores(r["cpu"]["server"])))
    out.append(row("CPU: PostgreSQL processes", lambda r: _cores(r["cpu"]["postgresql"]) if r["db"] == "postgresql"
                   else "—"))  # fmt: skip
    out.append(row("CPU: load generator (all hosts)", lambda r: _cores(r["cpu"]["loadgen"])))
    out.append(row("CPU: everything else on the machine", lambda r: _cores(r["cpu"]["other"])))
    out.append(row("load generator loop lag p99 / max", lambda r: f"{_ms(r['loadgen']['lag_p99'])} / "
                   f"{_ms(r['loadgen']['lag_max'])}"))  # fmt: skip
    out.append("\nVerdict latency: the task's `finished_at - created_at` in the server's database (the nonce "
               "is issued with the task; the result is recorded just before the task closes), for every "
               "attestation the server created in the window; one not finished when the run ended counts as "
               "unfinished (infinitely late). Throughput: verdicts recorded in the window per second. The "
               "breakdown (finished attestations only) joins the hosts' own clocks (same machine). CPU in "
               "cores, averaged over the window (/proc).\n")  # fmt: skip
    for r in results:
        if r.get("profile"):
            out.append(render_profile(r["profile"], f"{names[r['db']]}, {r['agents']:,} hosts"))
    return "".join(out)


def render_profile(p: dict[str, Any], name: str) -> str:
    busy = max(p["samples"], 1)
    lines = [f"\n## Where the server's time goes ({name}, sampled over the window)\n\n",
             "CPU seconds per thread over the window (from /proc): " + ", ".join(
                 f"{k}: {v:.1f} s" for k, v in sorted(p["thread_cpu"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
             + f" (window {p['seconds']:.0f} s).\n\n",
             "Busy stack samples (running or waiting for the GIL), by activity:\n\n| activity | share |\n|---|---|\n"]  # fmt: skip
    for label, n in p["activity"]:
        if n / busy >= 0.005:
            lines.append(f"| {label} | {100 * n / busy:.1f} % |\n")
    lines.append("\nBy thread: " + ", ".join(f"{k} {100 * n / busy:.0f} %" for k, n in p["by_thread"]) + "\n\n")
    lines.append("Functions by inclusive share (top 25):\n\n| function | share |\n|---|---|\n")
    for key, n in p["inclusive"][:25]:
        lines.append(f"| `{key}` | {100 * n / busy:.1f} % |\n")
    lines.append("\nLeaf functions (top 15):\n\n| function | share |\n|---|---|\n")
    for key, n in p["leaf"][:15]:
        lines.append(f"| `{key}` | {100 * n / busy:.1f} % |\n")
    return "".join(lines)


SOURCE_ENV = "VROOT_FLEET_SOURCE"


def run_on_revision(revision: str, argv: list[str]) -> int:
    """Run this benchmark again in a child process whose `vroot` is a clean `git archive` of
    `revision`'s src/ (first on PYTHONPATH, so it wins over the editable install of the tree)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="vroot-fleet-src-"))
    try:
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": str(tmp / "src"), SOURCE_ENV: f"git {revision} ({sha[:12]})"}
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="5000", help="fleet size, or several separated by commas (one run each)")
    ap.add_argument("--minutes", type=float, default=5.0, help="measured window (default 5)")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--warmup", type=float, default=180.0, help="seconds from the first host start to the window")
    ap.add_argument("--ramp", type=float, default=60.0, help="seconds over which the hosts start")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds after the window for its last verdicts")
    ap.add_argument("--wait", type=float, default=25.0, help="hosts' long-poll wait (vroot.agent.TaskLoop's default)")
    ap.add_argument("--poll-interval", type=float, default=30.0, help="server's poll_interval_seconds")
    ap.add_argument("--scheduler-interval", type=float, default=1.0, help="server's scheduler_interval_seconds")
    ap.add_argument("--interval", type=int, default=60, help="server's attestation_interval_seconds")
    ap.add_argument("--machine-types", type=int, default=3)
    ap.add_argument("--ima-growth", type=int, default=2, help="IMA entries each host adds per attestation")
    ap.add_argument("--enroll-concurrency", type=int, default=8)
    ap.add_argument("--nice", type=int, default=10, help="niceness of the load generator")
    ap.add_argument("--profile", action="store_true", help="sample the server's stacks in the window")
    ap.add_argument("--what-if", default="", help="comma-separated server changes to try without editing the "
                    "server (monkeypatched in the server process; see _fleet_server.apply_what_if): nodelay, "
                    "sqlite-lock. The figures are then NOT the committed server's.")
    ap.add_argument("--pg", default=PG_ADMIN, help="libpq conninfo of the PostgreSQL admin connection")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--source", default="tree", help="'tree' (the working tree, default) or a git revision: "
                    "everything runs on a clean export of that revision's src/ (others may be editing the tree)")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "fleet-results.md")
    a = ap.parse_args(argv)
    if a.source != "tree" and not os.environ.get(SOURCE_ENV):
        return run_on_revision(a.source, sys.argv[1:] if argv is None else argv)
    sizes = [int(n) for n in str(a.agents).split(",") if n]
    o = Options(agents=sizes[0], minutes=a.minutes, warmup=a.warmup, ramp=a.ramp, grace=a.grace, wait=a.wait,
                poll_interval=a.poll_interval, scheduler_interval=a.scheduler_interval, interval=a.interval,
                machine_types=a.machine_types, ima_growth=a.ima_growth, enroll_concurrency=a.enroll_concurrency,
                nice=a.nice, profile=a.profile, pg_admin=a.pg, keep=a.keep,
                what_if=tuple(n for n in a.what_if.split(",") if n))  # fmt: skip
    dbs = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    results = [run_one(db, dataclasses.replace(o, agents=n)) for db in dbs for n in sizes]
    text = render(results, o)
    sys.stdout.write(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    (a.out.with_suffix(".json")).write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "server_log_tail"} for r in results], indent=1, default=str))  # fmt: skip
    return 0 if all((r["latency"][99] or 99) < GOAL_P99 and not r["errors"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
