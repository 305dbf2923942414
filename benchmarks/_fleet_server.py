"""`vroot server run DIR`, with a sampling profiler for the fleet benchmark's `--profile` runs.

    .venv/bin/python benchmarks/_fleet_server.py DIR PROFILE.json

Serves exactly as `vroot server run DIR --log-level warning` does (`load_settings`,
`Services.open`, `serve`), unless $VROOT_FLEET_WHAT_IF names changes to try (`apply_what_if`).
SIGUSR1 starts sampling, SIGUSR2 stops it and writes PROFILE.json.

The sampler is a thread that every 10 ms reads every other thread's Python stack
(`sys._current_frames`). A thread whose innermost frame is a known wait (a lock or condition wait,
the event loop's select) counts as idle; every other sample counts as "busy": running, or ready to
run and waiting for the GIL (Python cannot tell the two apart). Each busy sample is charged to one
activity (the first rule of `ACTIVITIES` that matches a frame of the stack, innermost rules first),
to its leaf function, and inclusively to every function on the stack. Per-thread CPU seconds come
from /proc/self/task/<tid>/stat at both ends, so the shares can be read as CPU time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

IDLE_LEAVES = frozenset({("threading.py", "wait"), ("selectors.py", "select"), ("queue.py", "get"),
                         ("threading.py", "_wait_for_tstate_lock"), ("_hub.py", "wait")})  # fmt: skip
IDLE_CALLERS = ("store/_notify.py",)  # a stack through one of these files' `wait` is idle
# (label, file suffix, function): the first match walking OUTWARD from the leaf names the activity,
# so inner work (a store call inside an attestation) is charged to the most specific label.
ACTIVITIES = (
    ("store: waiting for the SQLite write lock (BEGIN IMMEDIATE)", "store/_db.py", "_on_begin"),
    ("store: in psycopg (incl. waiting for PostgreSQL)", "/psycopg/", ""),
    ("attest: verify evidence (quote, logs, certify)", "attestation/host.py", "verify_host_evidence"),
    ("attest: AK certificate", "pca/_akcert.py", "verify_ak_certificate"),
    ("attest: appraisal", "baseline/_appraise.py", "appraise"),
    ("attest: appraisal input", "baseline/_appraise.py", "appraisal_input_from_host_evidence"),
    ("attest: IMA state (load/save)", "server/_imastate.py", "load"),
    ("attest: IMA state (load/save)", "server/_imastate.py", "save"),
    ("attest: sign EAR + record result", "server/_attest.py", "_record"),
    ("attest: reboot/clock counters", "server/_attest.py", "_check_counters"),
    ("attest: nonce, agent, revocation reads", "server/_attest.py", "_verify"),
    ("attest: other (task read, finish)", "server/_attest.py", "accept"),
    ("scheduler: due() scan", "server/_scheduler.py", "due"),
    ("scheduler: request (nonce + task)", "server/_attest.py", "request"),
    ("scheduler: other", "server/_scheduler.py", "tick"),
    ("long-poll: lease", "server/_tasks.py", "lease_one"),
    ("long-poll: wait loop (event loop)", "server/_tasks.py", "long_poll"),
    ("agent auth (client certificate, store)", "server/_auth.py", "authenticate"),
    ("task ownership read", "server/_tasks.py", "own"),
    ("webhooks / events", "server/_webhooks.py", "_run"),
    ("task waker", "server/_tasks.py", "_run"),
    ("request parsing/validation (FastAPI, pydantic)", "fastapi/routing.py", "serialize_response"),
    ("request parsing/validation (FastAPI, pydantic)", "fastapi/routing.py", "get_request_handler"),
    ("request parsing/validation (FastAPI, pydantic)", "fastapi/dependencies/utils.py", "solve_dependencies"),
    ("HTTP + TLS (uvicorn, h11, ssl)", "uvicorn/protocols/http/h11_impl.py", ""),
    ("HTTP + TLS (uvicorn, h11, ssl)", "asyncio/sslproto.py", ""),
    ("HTTP + TLS (uvicorn, h11, ssl)", "asyncio/selector_events.py", ""),
    ("ASGI middleware / routing", "starlette/", ""),
)


def _where(code) -> str:  # noqa: ANN001
    parts = code.co_filename.split("/")
    return "/".join(parts[-2:])


class Sampler(threading.Thread):
    def __init__(self, period: float = 0.01) -> None:
        super().__init__(name="fleet-sampler", daemon=True)
        self.period = period
        self.active = threading.Event()
        self.samples = 0
        self.idle = 0
        self.activity: Counter[str] = Counter()
        self.leaf: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.by_thread: Counter[str] = Counter()

    def run(self) -> None:
        me = threading.get_ident()
        names = {}
        while True:
            time.sleep(self.period)
            if not self.active.is_set():
                continue
            if len(names) != threading.active_count():
                names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                code = frame.f_code
                if (code.co_filename.rsplit("/", 1)[-1], code.co_name) in IDLE_LEAVES:
                    self.idle += 1
                    continue
                stack = []
                f = frame
                while f is not None:
                    stack.append(f.f_code)
                    f = f.f_back
                if any(c.co_name == "wait" and c.co_filename.endswith(IDLE_CALLERS) for c in stack):
                    self.idle += 1  # e.g. the task waker in LISTEN (psycopg's notifies)
                    continue
                self.samples += 1
                self.by_thread[_thread_group(names.get(ident, "?"))] += 1
                self.leaf[f"{_where(code)}:{code.co_name}"] += 1
                label = None
                for c in stack:
                    label = _activity(c)
                    if label is not None:
                        break
                for key in {f"{_where(c)}:{c.co_name}" for c in stack}:
                    self.inclusive[key] += 1
                self.activity[label or "other"] += 1


def _activity(code) -> str | None:  # noqa: ANN001
    for label, suffix, name in ACTIVITIES:
        if suffix in code.co_filename and (not name or code.co_name == name):
            return label
    return None


def _thread_group(name: str) -> str:
    if name.startswith("AnyIO worker"):
        return "threadpool (sync endpoints)"
    return {"MainThread": "event loop (main thread)"}.get(name, name)


def _cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds per long-lived thread of this process, from /proc; the rest of the process's time
    (the threadpool's workers, which come and go) as one figure."""
    out: Counter[str] = Counter()
    for t in threading.enumerate():
        group = _thread_group(t.name)
        if group.startswith("threadpool"):
            continue
        try:
            out[group] += _cpu(f"/proc/self/task/{t.native_id}/stat")
        except (OSError, TypeError):
            continue
    out["threadpool (sync endpoints) and exited threads"] = _cpu("/proc/self/stat") - sum(out.values())
    return dict(out)


WHAT_IF_ENV = "VROOT_FLEET_WHAT_IF"


def apply_what_if(names: set[str]) -> None:
    """Server changes the benchmark can try WITHOUT editing the server (monkeypatches in this
    process only), to measure what a proposed fix would give:

    nodelay      the listening socket is made with proto IPPROTO_TCP, so asyncio sets TCP_NODELAY
                 on every accepted connection (vroot.server._serve.bind makes it with proto 0, and
                 asyncio's _set_nodelay skips such sockets: each response then waits ~40 ms for the
                 client's delayed ACK, Nagle's algorithm holding back the body behind the headers);
    sqlite-lock  SQLite write transactions of this process take one threading.Lock first, so
                 writers queue in Python instead of in SQLite's busy handler, which sleeps
                 1, 2, 5, 10 ... 100 ms between tries while the lock may long be free.
    switch       sys.setswitchinterval(0.0005): a thread back from the database (which releases
                 the GIL for every call) waits at most 0.5 ms, not 5 ms, for a busy thread to
                 hand the GIL over.
    """
    unknown = names - {"nodelay", "sqlite-lock", "switch"}
    if unknown:
        raise SystemExit(f"unknown what-if {sorted(unknown)}")
    if "switch" in names:  # the GIL is handed over every 0.5 ms instead of 5 ms
        sys.setswitchinterval(0.0005)
    if "nodelay" in names:
        import socket

        import vroot.server._serve as serve_module

        bind = serve_module.bind

        def bind_tcp(host: str, port: int) -> socket.socket:
            sock = bind(host, port)
            return socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())

        serve_module.bind = bind_tcp
    if "sqlite-lock" in names:
        from contextlib import contextmanager

        from vroot.store._db import Database

        write = Database.write
        lock = threading.Lock()

        @contextmanager
        def serialized_write(self, what):  # noqa: ANN001, ANN202
            if self.is_postgresql:
                with write(self, what) as session:
                    yield session
                return
            with lock, write(self, what) as session:
                yield session

        Database.write = serialized_write


def main() -> int:
    directory, profile_path = sys.argv[1], Path(sys.argv[2])
    from vroot.server import Services, load_settings, serve

    apply_what_if({n for n in os.environ.get(WHAT_IF_ENV, "").split(",") if n})
    sampler = Sampler()
    sampler.start()
    marks: dict[str, object] = {}

    def start(*_: object) -> None:
        marks["cpu0"], marks["t0"] = thread_cpu(), time.monotonic()
        sampler.active.set()

    def stop(*_: object) -> None:
        sampler.active.clear()
        cpu0, cpu1 = marks.get("cpu0") or {}, thread_cpu()
        seconds = time.monotonic() - float(marks.get("t0", time.monotonic()))
        doc = {"seconds": seconds, "samples": sampler.samples, "idle_samples": sampler.idle,
               "period": sampler.period, "activity": sampler.activity.most_common(),
               "by_thread": sampler.by_thread.most_common(), "leaf": sampler.leaf.most_common(40),
               "inclusive": sampler.inclusive.most_common(60),
               "thread_cpu": {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}}  # fmt: skip
        profile_path.write_text(json.dumps(doc, indent=1))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    settings = load_settings(directory, environ=os.environ)
    services = Services.open(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        serve(settings, services, log_level="warning")
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
