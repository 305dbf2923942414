"""Fixtures for the tests that talk to a real TPM 2.0 simulator (swtpm).

- `swtpm_factory(**kw)`: starts a fresh swtpm (own state dir under tmp_path; a unix socket in a
  short private directory by default, `tcp=True` for a loopback port pair) and stops every one it
  started by PID at teardown, also when the test failed.
- `swtpm`: one such swtpm; `tm`: an open `TmClient` on it, closed at teardown.
- `module_swtpm`: one swtpm shared by the tests of a module (for keys made once); its tests must
  leave it as they found it (flush transient objects, close their connection).
- `tools_env(proc)`: an environment for tpm2-tools talking to `proc`.
- `verify_signature(pem, message, sig)`: checks a TPMT_SIGNATURE (ECDSA/RSASSA) with `cryptography`.

swtpm serves one connection at a time: close the `TmClient` before running a tool on the same swtpm.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from vroot.tm.swtpm import SwtpmProcess, free_tcp_port, start_swtpm

# Tests import tpm2_pytss directly too: keep expected failures quiet whatever is imported first.
os.environ.setdefault("TSS2_LOG", "all+NONE")


def tpm2b(buf: bytes, o: int) -> tuple[bytes, int]:
    """The payload of the TPM2B at offset `o`, and the offset after it."""
    n = int.from_bytes(buf[o : o + 2], "big")
    if o + 2 + n > len(buf):
        raise AssertionError("truncated TPM2B")
    return buf[o + 2 : o + 2 + n], o + 2 + n


def _verify_signature(pem: bytes, message: bytes, sig: bytes) -> None:
    """TPMT_SIGNATURE (ECDSA or RSASSA) over `message`; raises on a bad signature."""
    key = serialization.load_pem_public_key(pem)
    alg, halg = struct.unpack_from(">HH", sig)
    h = {0x0B: hashes.SHA256(), 0x0C: hashes.SHA384()}[halg]
    first, o = tpm2b(sig, 4)
    if alg == 0x18:
        second, o = tpm2b(sig, o)
        der = encode_dss_signature(int.from_bytes(first, "big"), int.from_bytes(second, "big"))
        key.verify(der, message, ec.ECDSA(h))  # type: ignore[union-attr,call-arg]
    elif alg == 0x14:
        key.verify(first, message, padding.PKCS1v15(), h)  # type: ignore[union-attr,call-arg]
    else:
        raise AssertionError(f"signature algorithm 0x{alg:x}")
    assert o == len(sig)


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} not found: run `make setup` (Debian packages swtpm, swtpm-tools, tpm2-tools)")
    return path


@contextmanager
def _swtpms(state_root: Path) -> Iterator[Callable[..., SwtpmProcess]]:
    """A function starting swtpms with their state under `state_root`; stops them all by PID on exit."""
    _require("swtpm")
    started: list[SwtpmProcess] = []
    # AF_UNIX paths must stay under 107 bytes (with ".ctrl"); tmp_path can be longer.
    sock_dir = Path(tempfile.mkdtemp(prefix="vr-", dir="/tmp"))
    counter = iter(range(1_000_000))

    def start(
        *, name: str | None = None, state_dir: Path | None = None, tcp: bool = False, **kw: Any
    ) -> SwtpmProcess:
        n = next(counter)
        name = name or f"tpm{n}"
        if state_dir is None:
            state_dir = state_root / name
        if tcp:
            kw.setdefault("tcp_port", free_tcp_port())
        else:
            kw.setdefault("unix_path", sock_dir / f"{n}.sock")
        proc = start_swtpm(state_dir, **kw)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop(timeout=2.0)
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def swtpm_factory(tmp_path: Path) -> Iterator[Callable[..., SwtpmProcess]]:
    with _swtpms(tmp_path) as start:
        yield start


@pytest.fixture
def swtpm(swtpm_factory: Callable[..., SwtpmProcess]) -> SwtpmProcess:
    return swtpm_factory()


@pytest.fixture(scope="module")
def module_swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmProcess]:
    """One swtpm for all the tests of a module, for set-up worth sharing (keys made once)."""
    with _swtpms(tmp_path_factory.mktemp("swtpm")) as start:
        yield start()


@pytest.fixture
def tm(swtpm: SwtpmProcess) -> Iterator[Any]:
    from vroot.tm.client import TmClient

    with TmClient.open(swtpm.tcti) as client:
        yield client


@pytest.fixture(scope="session")
def tools_env() -> Callable[[SwtpmProcess], dict[str, str]]:
    _require("tpm2_checkquote")

    def env(proc: SwtpmProcess) -> dict[str, str]:
        return {**os.environ, "TPM2TOOLS_TCTI": proc.tcti, "TSS2_LOG": "all+NONE"}

    return env


@pytest.fixture
def verify_signature() -> Callable[[bytes, bytes, bytes], None]:
    """verify_signature(pem, message, tpmt_signature): raises unless the signature verifies."""
    return _verify_signature
