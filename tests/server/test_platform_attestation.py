"""`vroot attest server` (MC-S2): the RA server and migration controller publish the evidence of
the platform they run on (a real swtpm-backed host whose agent runs beside the server), and an
operator checks it with nothing but the TM manufacturer's CA and a baseline: EK certificate,
credential activation, the quote over a nonce bound to the server's TLS certificate, the logs,
the appraisal. A tampered platform is untrusted with the finding; a foreign manufacturer CA, a
quote bound to another TLS certificate, and a server without a platform are refused."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from attest_helpers import POLICY, learnt_manifest, start_agent
from cryptography import x509
from vtm_helpers import make_host

from vroot.attestation import UnverifiedHostEvidence
from vroot.attestation.platform import verify_platform_evidence
from vroot.cli.main import run
from vroot.errors import NonceMismatch
from vroot.pki import create_ca, save_ca
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


@pytest.fixture
def platform(short_tmp, server_factory):  # noqa: ANN001, ANN201
    directory = make_host(short_tmp, "ctl-1")
    agent = start_agent(directory)
    try:
        server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), platform_host=str(directory))
        (short_tmp / "b.json").write_bytes(learnt_manifest(directory))
        (short_tmp / "p.yaml").write_text(POLICY.format(group="servers", baseline="hosts"))
        yield server, agent, directory
    finally:
        agent.stop()


def _args(server, short_tmp, *extra: str) -> list[str]:  # noqa: ANN001
    return ["attest", "server", "--server", server.url, "--ca", str(server.ca), *extra]


def test_mc_s2_an_operator_verifies_the_servers_platform(platform, short_tmp, capsys):
    server, agent, directory = platform
    judge = ["--manufacturer-ca", str(short_tmp / "manufacturer-ca" / "ca-cert.pem"),
             "--baseline", str(short_tmp / "b.json"), "--policy", str(short_tmp / "p.yaml")]  # fmt: skip
    assert run(_args(server, short_tmp, *judge)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "platform    ctl-1: evidence verified" in out and "credential activation" in out and "TRUSTED" in out

    loader = directory / "images" / "bootloader.efi"  # the platform's boot loader changes; it reboots
    data = loader.read_bytes()
    loader.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    agent.client.call("POST", "/v1/reboot", {})
    assert run(_args(server, short_tmp, *judge, "--json")) == 1
    out = capsys.readouterr().out
    assert '"verdict": "untrusted"' in out and "baseline.event.unknown" in out and "bootloader.efi" in out


def test_mc_s2_foreign_manufacturer_and_relayed_evidence_are_refused(platform, short_tmp, capsys):
    server, agent, directory = platform
    other = short_tmp / "other-ca"
    save_ca(create_ca(common_name="Other TM maker", now=datetime.now(UTC)), other)
    assert run(_args(server, short_tmp, "--manufacturer-ca", str(other / "ca-cert.pem"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EK certificate not trusted" in err[0]

    # evidence fetched for one TLS certificate does not verify for another (a relaying server)
    nonce = os.urandom(32)
    doc = server.operator().get("/v1/platform/evidence", params={"nonce": nonce.hex()})
    evidence = UnverifiedHostEvidence.from_json(doc["evidence"])
    ca = [x509.load_pem_x509_certificate((short_tmp / "manufacturer-ca" / "ca-cert.pem").read_bytes())]
    with pytest.raises(NonceMismatch):
        verify_platform_evidence(evidence, ek_public=parse_public(base64.b64decode(doc["ek_public"])),
                                 nonce=nonce, tls_certificate_der=b"another certificate", manufacturer_cas=ca,
                                 now=datetime.now(UTC))  # fmt: skip


def test_mc_s2_a_server_without_a_platform_says_so(server_factory, short_tmp, capsys):
    make_host(short_tmp, "h")  # for its manufacturer CA
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",))
    code = run(_args(server, short_tmp, "--manufacturer-ca", str(short_tmp / "manufacturer-ca" / "ca-cert.pem")))
    assert code == 2
    assert "publishes no platform evidence" in capsys.readouterr().err
