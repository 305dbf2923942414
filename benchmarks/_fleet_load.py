"""The fleet benchmark's load generator: N simulated hosts (`_fleet_sim`) in one asyncio process.

    .venv/bin/python benchmarks/_fleet_load.py CONFIG.json      (started by fleet_bench.py)

CONFIG.json: {"url", "ca" (the operations CA, PEM file), "token" (operator), "manufacturer_ca" (a
vroot CA directory: the test manufacturer that issues the EK certificates), "agents", "machine_types",
"workdir", "wait" (long-poll seconds), "enroll_concurrency", "ima_growth", "seed"}.

It talks to its parent over stdin/stdout in JSON lines:

    -> {"event": "enrolled", "agents": N, "seconds": s, "failures": k}   every host enrolled
    <- {"start": EPOCH, "ramp": SECONDS, "stop": EPOCH}                    when to run
    -> {"event": "done", "records": PATH, "summary": PATH}

1. Enrollment, through the real endpoints (`enroll` below): each host POSTs its EK certificate, EK
   and AK to /v1/enrollments, opens the credential with its EK in software, POSTs the secret with a
   CSR and its vTM-manager key to .../activation, and gets its client certificate; the operator
   puts it into the policy group of its machine type (PATCH /v1/agents/{id}).
2. From "start", the hosts' task loops begin, spread evenly over "ramp" seconds. Each host has its
   own `httpx.AsyncClient` (HTTP/1.1, one kept-alive TLS connection, its client certificate) and
   does what `vroot.agent.TaskLoop` does: long-poll GET /v1/agents/{id}/tasks?wait=W, answer an
   `attest` task with its evidence (POST .../tasks/{task}/result), repeat. A transport error or
   an error status waits 1 s and polls again.
3. At "stop" every loop is cancelled and the records are written: one JSON line per attest task
   answered, with the server's timestamps from the task (created_at, lease_until, finished_at)
   and the host's own wall-clock times (task received, result sent, answer received).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet_sim import SimAgent, make_machine_types  # noqa: E402

from vroot.pki import load_ca  # noqa: E402

JSON = {"content-type": "application/json"}


def _epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


@dataclass
class Stats:
    """What the load generator counts besides the per-attestation records."""

    polls: int = 0
    empty_polls: int = 0
    errors: list = field(default_factory=list)  # [wall time, "phase: kind"]
    lag_max: float = 0.0
    lags: list[float] = field(default_factory=list)


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# -- enrollment -----------------------------------------------------------------------------------


async def enroll(agent: SimAgent, http: httpx.AsyncClient, operator: dict[str, str]) -> str:
    """Enroll `agent` through the server's endpoints and put it into its machine type's group; its
    client certificate (PEM). Raises RuntimeError naming the step that failed."""
    r = await http.post("/v1/enrollments", json=agent.enrollment_claim())
    if r.status_code != 201:
        raise RuntimeError(f"begin {agent.agent_id}: {r.status_code} {r.text[:300]}")
    challenge = r.json()
    secret = agent.activate(base64.b64decode(challenge["credential_blob"]),
                            base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
    r = await http.post(f"/v1/enrollments/{challenge['agent_id']}/activation",
                        json=agent.activation(challenge["enrollment_id"], secret))  # fmt: skip
    if r.status_code != 200:
        raise RuntimeError(f"activation {agent.agent_id}: {r.status_code} {r.text[:300]}")
    certificate = r.json()["client_certificate"]
    r = await http.patch(f"/v1/agents/{agent.agent_id}", json={"group": agent.machine.name}, headers=operator)
    if r.status_code != 200:
        raise RuntimeError(f"group of {agent.agent_id}: {r.status_code} {r.text[:300]}")
    return certificate


async def enroll_all(agents: list[SimAgent], url: str, ca_pem: bytes, token: str,
                     concurrency: int) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """Enroll every agent, `concurrency` at a time: ({agent id: client certificate}, failures)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    operator = {"Authorization": f"Bearer {token}"}
    certificates: dict[str, str] = {}
    failures: list[str] = []
    queue: asyncio.Queue[SimAgent] = asyncio.Queue()
    for agent in agents:
        queue.put_nowait(agent)
    async with httpx.AsyncClient(base_url=url, verify=ctx, limits=limits, timeout=120) as http:

        async def worker() -> None:
            while not queue.empty():
                agent = queue.get_nowait()
                try:
                    certificates[agent.agent_id] = await enroll(agent, http, operator)
                except (RuntimeError, httpx.HTTPError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return certificates, failures


# -- the task loops -------------------------------------------------------------------------------


def client_for(agent: SimAgent, certificate: str, ca_pem: bytes, url: str, directory: Path,
               wait: float) -> httpx.AsyncClient:  # fmt: skip
    """The host's own HTTPS client: its client certificate, the operations CA, one kept-alive connection."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = agent.agent_id.replace(":", "_")
    cert_path, key_path = directory / f"{safe}.crt", directory / f"{safe}.key"
    cert_path.write_text(certificate)
    key_path.write_bytes(agent.client_key_pem())
    key_path.chmod(0o600)
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return httpx.AsyncClient(base_url=url, verify=ctx, http1=True, http2=False,
                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                             timeout=httpx.Timeout(30.0, read=wait + 30.0))  # fmt: skip


async def task_loop(agent: SimAgent, http: httpx.AsyncClient, *, start: float, wait: float, stats: Stats,
                    records: list[dict[str, Any]]) -> None:  # fmt: skip
    """`vroot.agent.TaskLoop` for one simulated host, until cancelled."""
    await asyncio.sleep(max(0.0, start - time.time()))
    tasks_path = f"/v1/agents/{agent.agent_id}/tasks"
    while True:
        stats.polls += 1
        try:
            r = await http.get(tasks_path, params={"wait": wait})
        except httpx.HTTPError as exc:
            stats.errors.append([time.time(), f"poll: {type(exc).__name__}"])
            await asyncio.sleep(1.0)
            continue
        if r.status_code != 200:
            stats.errors.append([time.time(), f"poll: HTTP {r.status_code}"])
            await asyncio.sleep(1.0)
            continue
        task = r.json()["task"]
        if task is None:
            stats.empty_polls += 1
            continue
        received = time.time()
        if task["kind"] != "attest":
            stats.errors.append([time.time(), f"task: unexpected kind {task['kind']}"])
            body = json.dumps({"status": "failed", "result": {"error": "NotFound", "detail": "no handler"}})
        else:
            body = agent.result_body(bytes.fromhex(task["payload"]["nonce"]))
        sent = time.time()
        record = {"task": task["id"], "agent": agent.agent_id, "created": _epoch(task["created_at"]),
                  "lease_until": _epoch(task["lease_until"]), "attempts": task["attempts"], "received": received,
                  "sent": sent}  # fmt: skip
        try:
            r = await http.post(f"{tasks_path}/{task['id']}/result", content=body, headers=JSON)
        except httpx.HTTPError as exc:
            stats.errors.append([time.time(), f"result: {type(exc).__name__}"])
            record.update(answered=time.time(), status=None, error=type(exc).__name__)
            records.append(record)
            await asyncio.sleep(1.0)
            continue
        record["answered"] = time.time()
        record["status"] = r.status_code
        if r.status_code == 200:
            done = r.json()
            record.update(state=done["state"], finished=_epoch(done["finished_at"]),
                          verdict=(done.get("result") or {}).get("verdict"))  # fmt: skip
        else:
            stats.errors.append([time.time(), f"result: HTTP {r.status_code}"])
            record["error"] = r.text[:200]
        records.append(record)


async def lag_monitor(stats: Stats, period: float = 0.1) -> None:
    """How late the event loop wakes up (the load generator's own saturation)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(period)
        lag = time.monotonic() - before - period
        stats.lags.append(lag)
        stats.lag_max = max(stats.lag_max, lag)


async def read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def main_async(config: dict[str, Any]) -> int:
    workdir = Path(config["workdir"])
    tls_dir = workdir / "agents"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_pem = Path(config["ca"]).read_bytes()
    manufacturer = load_ca(config["manufacturer_ca"])
    machines = make_machine_types(config["machine_types"])
    now = datetime.now(UTC)
    agents = [SimAgent.create(f"fleet-{i:05d}", machines[i % len(machines)], manufacturer, now=now,
                              serial=0x10000 + i, reset_count=1 + i % 7, ima_growth=config["ima_growth"])
              for i in range(config["agents"])]  # fmt: skip
    began = time.monotonic()
    certificates, failures = await enroll_all(agents, config["url"], ca_pem, config["token"],
                                              config["enroll_concurrency"])  # fmt: skip
    _say({"event": "enrolled", "agents": len(certificates), "seconds": time.monotonic() - began,
          "failures": len(failures), "first_failures": failures[:5]})  # fmt: skip
    plan = json.loads(await read_line())
    wait = float(config["wait"])
    enrolled = [a for a in agents if a.agent_id in certificates]
    clients = [client_for(a, certificates[a.agent_id], ca_pem, config["url"], tls_dir, wait) for a in enrolled]
    stats = Stats()
    records: list[dict[str, Any]] = []
    n = max(len(enrolled), 1)
    loops = [asyncio.create_task(task_loop(a, c, start=plan["start"] + plan["ramp"] * i / n, wait=wait,
                                           stats=stats, records=records))
             for i, (a, c) in enumerate(zip(enrolled, clients, strict=True))]  # fmt: skip
    monitor = asyncio.create_task(lag_monitor(stats))
    await asyncio.sleep(max(0.0, plan["stop"] - time.time()))
    for t in (*loops, monitor):
        t.cancel()
    await asyncio.gather(*loops, monitor, return_exceptions=True)
    await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    records_path, summary_path = workdir / "records.jsonl", workdir / "load-summary.json"
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    lags = sorted(stats.lags) or [0.0]
    summary = {"agents": len(enrolled), "enroll_failures": failures[:20], "polls": stats.polls,
               "empty_polls": stats.empty_polls, "errors": stats.errors, "lag_max": stats.lag_max,
               "lag_p99": lags[int(0.99 * (len(lags) - 1))], "ima_entries_max": max((a.ima_count for a in agents),
                                                                                    default=0)}  # fmt: skip
    summary_path.write_text(json.dumps(summary, indent=2))
    _say({"event": "done", "records": str(records_path), "summary": str(summary_path)})
    return 0


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    if config.get("nice"):
        os.nice(int(config["nice"]))
    return asyncio.run(main_async(config))


if __name__ == "__main__":
    sys.exit(main())
