"""vTM creation and density (issue 3), side by side with the path libvirt takes, in one run.

    .venv/bin/python benchmarks/vtm_bench.py [--n 20] [--density 500]

(a) per vTM, ready to use with an EK certificate: vroot's `vtm create` through the host agent's
    API (state key sealed in the host TM, swtpm started, vEK created and certified inside the host
    TM, certificate in NV, launch measured) against libvirt's path: `swtpm_setup --tpm2
    --create-ek-cert --create-platform-cert --lock-nvram` with `swtpm_localca`, then `swtpm socket`
    started and answering. Goal: vroot ≥ 10× faster per vTM.
(b) density: `--density` vTMs created on one simulated host and left idle; RSS and PSS of each
    vTM's swtpm from /proc/PID/smaps_rollup. Goals: ≥ 500 vTMs, PSS per idle vTM ≤ 2 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import fmt  # noqa: E402


def _host(root: Path):  # noqa: ANN202
    from vroot.host import AgentClient, HostConfig, HostPaths, init_host
    from vroot.host.agent import HostAgent

    directory = root / "h"
    init_host(directory, config=HostConfig(host_id="bench", mode="simulate"), now=datetime.now(UTC), serial=1,
              manufacturer_ca_dir=root / "ca")  # fmt: skip
    agent = HostAgent.start(directory)
    ready = threading.Event()
    thread = threading.Thread(
        target=agent.serve, kwargs={"on_ready": ready.set, "check_interval": 5.0}, daemon=True
    )
    thread.start()
    ready.wait(10)
    return agent, thread, AgentClient(HostPaths(directory).agent_socket)


def _stop(client, thread) -> None:  # noqa: ANN001
    client.call("POST", "/v1/shutdown", {"stop_vtms": True, "stop_tm": True})
    thread.join(120)


def bench_vroot(n: int, root: Path) -> list[float]:
    agent, thread, client = _host(root / "vroot")
    samples = []
    try:
        client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4())})  # warm-up
        for _ in range(n):
            t0 = time.perf_counter()
            client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4())})
            samples.append(time.perf_counter() - t0)
    finally:
        _stop(client, thread)
    return samples


def _localca_config(root: Path) -> Path:
    cfg = root / "cfg"
    (cfg / "ca").mkdir(parents=True)
    (cfg / "swtpm-localca.conf").write_text(
        f"statedir = {cfg / 'ca'}\nsigningkey = {cfg / 'ca' / 'signkey.pem'}\n"
        f"issuercert = {cfg / 'ca' / 'issuercert.pem'}\ncertserial = {cfg / 'ca' / 'certserial'}\n"
    )
    (cfg / "swtpm-localca.options").write_text("--platform-manufacturer vroot-bench\n--platform-model bench\n--platform-version 1\n")
    (cfg / "swtpm_setup.conf").write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {cfg / 'swtpm-localca.conf'}\n"
        f"create_certs_tool_options = {cfg / 'swtpm-localca.options'}\n"
        "active_pcr_banks = sha256\n"
    )
    return cfg / "swtpm_setup.conf"


def bench_libvirt_path(n: int, root: Path) -> list[float]:
    """What libvirt runs per vTPM: swtpm_setup with certificates from swtpm_localca, then swtpm."""
    from vroot.tm.swtpm import start_swtpm

    config = _localca_config(root / "libvirt")
    samples = []
    for i in range(n + 1):
        state = root / "libvirt" / f"tpm{i}"
        state.mkdir()
        vm = uuid.uuid4()
        t0 = time.perf_counter()
        argv = ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--vmid", f"vm{i}:{vm}", "--create-ek-cert",
                "--create-platform-cert", "--lock-nvram", "--not-overwrite", "--config", str(config)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"swtpm_setup failed: {out.stdout[-400:]} {out.stderr[-400:]}")
        proc = start_swtpm(state, unix_path=root / "libvirt" / f"{i}.sock", ctrl_only=True)
        elapsed = time.perf_counter() - t0
        proc.stop()
        if i:  # the first run creates the local CA
            samples.append(elapsed)
    return samples


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return rss, pss


def bench_density(count: int, root: Path) -> dict:
    agent, thread, client = _host(root / "density")
    try:
        t0 = time.perf_counter()
        for _ in range(count):
            client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4())})
        elapsed = time.perf_counter() - t0
        time.sleep(1.0)  # idle
        statuses = client.call("GET", "/v1/vtms")["vtms"]
        running = [s for s in statuses if s["running"]]
        memory = [_memory(s["pid"]) for s in running]
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable"))
    finally:
        _stop(client, thread)
    return {
        "created": count,
        "running": len(running),
        "seconds": elapsed,
        "rss_median": statistics.median(m[0] for m in memory),
        "pss_median": statistics.median(m[1] for m in memory),
        "pss_total": sum(m[1] for m in memory),
        "mem_available_kib": available,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="vTMs per path for (a)")
    parser.add_argument("--density", type=int, default=500, help="vTMs for (b); 0 skips it")
    args = parser.parse_args()
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    root = Path(tempfile.mkdtemp(prefix="vb", dir="/tmp"))
    root.chmod(0o711)  # vTMs run as their own uids and must pass through
    try:
        ours = bench_vroot(args.n, root)
        theirs = bench_libvirt_path(args.n, root)
        density = bench_density(args.density, root) if args.density else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    lines = [
        "## vTM creation (per vTM, ready, with an EK certificate)",
        "",
        "| path | median | ratio |",
        "|---|---:|---:|",
        f"| vroot `vtm create` (host agent API) | {fmt(mo)} | 1× |",
        f"| libvirt's: swtpm_setup + swtpm_localca, then swtpm | {fmt(mt)} | {mt / mo:.1f}× slower |",
        "",
        f"n = {args.n} each; goal: vroot ≥ 10× faster.",
    ]
    if density:
        lines += [
            "",
            "## Density (idle vTMs on one simulated host)",
            "",
            f"{density['running']} of {density['created']} vTMs running after creating them in "
            f"{density['seconds']:.1f} s; per idle vTM swtpm: RSS {density['rss_median'] / 2**20:.2f} MiB, "
            f"PSS {density['pss_median'] / 2**20:.2f} MiB (median); PSS total {density['pss_total'] / 2**20:.0f} MiB; "
            f"MemAvailable with them running {density['mem_available_kib'] / 2**20:.1f} GiB.",
            "",
            "Goals: ≥ 500 vTMs, PSS ≤ 2 MB per idle vTM.",
        ]
    text = "\n".join(lines)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "vtm-results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
