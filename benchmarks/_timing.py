"""Timing helpers for the benchmarks: medians of repeated runs (the machines are noisy)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def median_call(fn: Callable[[], object], *, repeat: int, warmup: int = 3, inner: int = 1) -> float:
    """Median wall time of `fn()` in seconds (each sample times `inner` calls, divided by `inner`)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def median_process(
    argv: Sequence[str], *, repeat: int, warmup: int = 2, env: dict[str, str] | None = None
) -> float:
    """Median wall time of running `argv` to completion (output discarded); fails if it fails.

    `env` replaces the environment when given."""
    full_env = dict(os.environ) if env is None else env

    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=full_env)
        return time.perf_counter() - t0

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(repeat))


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"
