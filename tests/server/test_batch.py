"""The in-memory gathering of a host's waiting VMs into one batch (RA-4, VMM-F5: one host deep quote
for many VMs): the leader seals when every expected member has joined, or when the window ends;
every member gets the sealed batch and its own index, or the sealing error."""

from __future__ import annotations

import threading
import time

from vroot.errors import Unavailable
from vroot.server._batch import Batcher


def _join_all(batcher: Batcher, key: str, members: list[str], expected: set[str], sealed: list[list[str]],
              *, gap: float = 0.0) -> dict[str, object]:  # fmt: skip
    out: dict[str, object] = {}

    def seal(batch: list[str]) -> str:
        sealed.append(list(batch))
        return f"task-{len(sealed)}"

    def run(member: str) -> None:
        try:
            out[member] = batcher.join(key, member, complete=lambda ms: expected <= set(ms), seal=seal)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            out[member] = exc

    threads = []
    for member in members:
        threads.append(threading.Thread(target=run, args=(member,)))
        threads[-1].start()
        time.sleep(gap)
    for thread in threads:
        thread.join(10)
    return out


def test_vmm_f5_members_expected_together_share_one_sealed_batch():
    sealed: list[list[str]] = []
    started = time.monotonic()
    out = _join_all(Batcher(window=5.0, linger=0.05), "host:a", ["vm:1", "vm:2", "vm:3"], {"vm:1", "vm:2", "vm:3"},
                    sealed, gap=0.1)  # fmt: skip
    assert time.monotonic() - started < 2.0  # sealed once all were in, long before the window ended
    assert sealed == [["vm:1", "vm:2", "vm:3"]]
    assert out == {"vm:1": ("task-1", 0), "vm:2": ("task-1", 1), "vm:3": ("task-1", 2)}


def test_a_member_that_never_comes_holds_the_batch_for_the_window_only():
    sealed: list[list[str]] = []
    started = time.monotonic()
    out = _join_all(Batcher(window=0.5, linger=0.0), "host:a", ["vm:1"], {"vm:1", "vm:2"}, sealed)
    assert 0.45 <= time.monotonic() - started < 3.0
    assert sealed == [["vm:1"]] and out == {"vm:1": ("task-1", 0)}


def test_hosts_are_batched_apart_and_a_sealed_batch_takes_no_one_more():
    batcher: Batcher = Batcher(window=0.3, linger=0.0)
    sealed: list[list[str]] = []
    a = _join_all(batcher, "host:a", ["vm:1"], {"vm:1"}, sealed)
    b = _join_all(batcher, "host:b", ["vm:2"], {"vm:2"}, sealed)
    again = _join_all(batcher, "host:a", ["vm:3"], {"vm:3"}, sealed)
    assert sealed == [["vm:1"], ["vm:2"], ["vm:3"]]
    assert (a["vm:1"], b["vm:2"], again["vm:3"]) == (("task-1", 0), ("task-2", 0), ("task-3", 0))


def test_a_sealing_error_reaches_every_member():
    batcher: Batcher = Batcher(window=2.0, linger=0.05)
    out: dict[str, object] = {}

    def seal(batch: list[str]) -> str:
        raise Unavailable("the store does not answer")

    def run(member: str) -> None:
        try:
            out[member] = batcher.join("host:a", member, complete=lambda ms: len(ms) == 2, seal=seal)
        except Unavailable as exc:
            out[member] = exc

    threads = [threading.Thread(target=run, args=(m,)) for m in ("vm:1", "vm:2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(out) == 2 and all(isinstance(v, Unavailable) and "does not answer" in str(v) for v in out.values())
