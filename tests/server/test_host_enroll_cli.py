"""`vroot host enroll DIR --server URL --ca PEM` (RA-1) from the command line: the host enrolls by
credential activation and its agent's credentials land in DIR/server/; the old spelling
`vroot server enroll-host` still works; a server that does not trust the host's TM manufacturer
refuses it with a one-line reason and exit 2 (bad input), leaving no credentials behind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from vtm_helpers import make_host

from vroot.agent import load_credentials
from vroot.cli.main import run
from vroot.errors import NotFound
from vroot.pki import create_ca, save_ca

pytestmark = pytest.mark.tpm


def test_ra1_host_enroll_cli_enrolls_and_says_how_to_run(server_factory, short_tmp, capsys):
    host_dir = make_host(short_tmp, "host-c")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",))
    code = run(["host", "enroll", str(host_dir), "--server", server.url, "--ca", str(server.ca)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "enrolled host:host-c" in out and f"vroot host run {host_dir} --server {server.url}" in out
    creds = load_credentials(host_dir)
    assert creds.agent_id == "host:host-c" and creds.client_certificate.exists()
    assert server.operator().get("/v1/agents/host:host-c")["state"] == "active"

    first = creds.client_certificate.read_bytes()
    code = run(["server", "enroll-host", str(host_dir), "--server", server.url, "--ca", str(server.ca)])
    assert code == 0, capsys.readouterr().err
    assert load_credentials(host_dir).client_certificate.read_bytes() != first  # enrolled again


def test_ra1_host_enroll_cli_refused_by_a_server_not_trusting_its_manufacturer(server_factory, short_tmp, capsys):
    host_dir = make_host(short_tmp, "host-d")
    other = short_tmp / "other-ca"
    save_ca(create_ca(common_name="Other TM Manufacturer CA", now=datetime.now(UTC)), other)
    server = server_factory(manufacturer_cas=(other,))
    code = run(["host", "enroll", str(host_dir), "--server", server.url, "--ca", str(server.ca)])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "EK certificate" in lines[0], err
    assert not (host_dir / "server").exists() or not any((host_dir / "server").glob("*.pem"))
    with pytest.raises(NotFound):
        server.services.store.agents.get("host:host-d")
