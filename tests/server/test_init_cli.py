"""`vroot server init|run|status|enroll-host` and the settings they share: the directory and its
modes, the operator token shown once and stored only as a hash, environment overrides, and the
commands end to end in separate processes, as a new user would run them."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from server_helpers import terminate
from vtm_helpers import make_host

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.pki import create_ca, save_ca
from vroot.server import init_server, load_settings
from vroot.store import Store

VROOT = str(Path(sys.executable).parent / "vroot")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_init_creates_everything_with_the_right_modes(tmp_path):
    ca_dir = tmp_path / "mca"
    save_ca(create_ca(common_name="manufacturer", now=datetime.now(UTC)), ca_dir)
    d = tmp_path / "srv"
    result = init_server(d, now=datetime.now(UTC), rng=os.urandom, manufacturer_cas=[ca_dir / "ca-cert.pem"],
                         hostname="ra.example")  # fmt: skip
    assert mode(d) == 0o700 and mode(d / "keys") == 0o700 and mode(d / "tls") == 0o700
    assert mode(d / "server.toml") == 0o600 and mode(d / "tls" / "server-key.pem") == 0o600
    for key in ("keys/pca/ca-key.pem", "keys/ops/ca-key.pem", "keys/result-signing-key.pem"):
        assert mode(d / key) == 0o600, key
    assert (d / "trust" / "manufacturer-0.pem").read_bytes() == (ca_dir / "ca-cert.pem").read_bytes()
    s = result.settings
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 8443)
    assert s.database_url == f"sqlite:///{d / 'vroot.db'}" and s.manufacturer_cas == (d / "trust" / "manufacturer-0.pem",)
    with Store.open(s.database_url) as store:
        assert store.is_current()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((d / "tls" / "server-cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "ra.example"} <= set(names.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    with pytest.raises(Conflict, match="already a vroot server"):
        init_server(d, now=datetime.now(UTC), rng=os.urandom)


def test_operator_token_is_returned_once_and_only_its_hash_is_stored(tmp_path):
    d = tmp_path / "srv"
    result = init_server(d, now=datetime.now(UTC), rng=os.urandom)
    token = result.operator_token
    assert len(token) == 64 and token not in repr(result)
    assert result.settings.operator_token_sha256 == hashlib.sha256(token.encode()).digest()
    needles = (token.encode(), bytes.fromhex(token))
    for path in every_file(d):
        data = path.read_bytes()
        assert not any(n in data for n in needles), f"{path} holds the operator token"
    assert hashlib.sha256(token.encode()).hexdigest() in (d / "server.toml").read_text()


def test_settings_come_from_the_file_with_environment_overrides(tmp_path):
    d = tmp_path / "srv"
    init_server(d, now=datetime.now(UTC), rng=os.urandom, listen="[::1]:9000")
    base = load_settings(d, environ={})
    assert (base.listen_host, base.listen_port, base.listen) == ("::1", 9000, "[::1]:9000")
    s = load_settings(d, environ={"VROOT_SERVER_LISTEN": "127.0.0.1:7000", "VROOT_SERVER_ENROLLMENT_TTL_SECONDS": "30",
                                  "VROOT_SERVER_MANUFACTURER_CAS": "a.pem, /abs/b.pem", "OTHER": "x"})  # fmt: skip
    assert (s.listen_port, s.enrollment_ttl.total_seconds()) == (7000, 30)
    assert s.manufacturer_cas == (d / "a.pem", Path("/abs/b.pem"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.listen_port = 1  # type: ignore[misc]
    with pytest.raises(InvalidInput, match="enrollment_ttl_seconds"):
        load_settings(d, environ={"VROOT_SERVER_ENROLLMENT_TTL_SECONDS": "-1"})
    with pytest.raises(InvalidInput, match="listen address"):
        load_settings(d, environ={"VROOT_SERVER_LISTEN": "no-port"})
    (d / "server.toml").write_text((d / "server.toml").read_text() + "nonce_ttl = 5\n")
    with pytest.raises(InvalidInput, match="nonce_ttl: Extra inputs are not permitted"):
        load_settings(d, environ={})
    with pytest.raises(NotFound, match="not a vroot server directory"):
        load_settings(tmp_path / "nothing", environ={})


def vroot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VROOT, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.tpm
def test_cli_init_run_enroll_status_end_to_end(short_tmp):
    host_dir = make_host(short_tmp, "host-cli")
    d, port = short_tmp / "srv", free_port()
    out = vroot("server", "init", str(d), "--manufacturer-ca", str(short_tmp / "manufacturer-ca"),
                "--listen", f"127.0.0.1:{port}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    [line] = [ln for ln in out.stdout.splitlines() if "operator token" in ln]
    token = line.rsplit(" ", 1)[1]
    assert (out.stdout + out.stderr).count(token) == 1
    again = vroot("server", "init", str(d))
    assert again.returncode == 1 and again.stderr.strip().endswith("is already a vroot server directory")

    server = subprocess.Popen([VROOT, "server", "run", str(d), "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (status := vroot("server", "status", str(d), "--token", token)).returncode != 0:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.3)
        assert f"https://127.0.0.1:{port}: ok" in status.stdout and "no agents" in status.stdout

        url, ca = f"https://127.0.0.1:{port}", str(d / "tls" / "ca.pem")
        out = vroot("server", "enroll-host", str(host_dir), "--server", url, "--ca", ca)
        assert out.returncode == 0 and "enrolled host:host-cli" in out.stdout, out.stderr
        status = vroot("server", "status", url, "--ca", ca, env={"VROOT_TOKEN": token})
        assert "host agents: 1 active" in status.stdout, status.stderr
        wrong = vroot("server", "status", str(d), "--token", "0" * 64)
        assert wrong.returncode == 1 and "operator token is not valid" in wrong.stderr
        assert "0" * 64 not in wrong.stderr
    finally:
        terminate(server)
    assert server.returncode == 0
