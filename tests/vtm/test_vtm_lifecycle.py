"""vTM lifecycle through the host agent (VMM-F1, VMM-F2, VMM-F4, VMM-F6, VMM-S3)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from cryptography import x509

from vroot.attestation import verify_certify
from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.eventlog import parse_tcg_log, replay_tcg_log
from vroot.host import load_host_keys
from vroot.host._provision import manager_qualifying_data
from vroot.measure import LAUNCH_PCR, parse_launch_event_data
from vroot.pki import is_virtual_tm_certificate, load_ca, verify_ek_certificate, verify_vek_certificate
from vroot.tpm2 import HashAlg, parse_public

pytestmark = pytest.mark.tpm


def test_create_list_stop_start_destroy(agent):
    """VMM-F1: the whole life of a vTM, through the agent's API."""
    vm = str(uuid.uuid4())
    created = agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    assert created["running"] and created["pid"] > 0 and created["transport"] == "unix"
    assert [v["vm_uuid"] for v in agent.client.call("GET", "/v1/vtms")["vtms"]] == [vm]
    stopped = agent.client.call("POST", f"/v1/vtms/{vm}/stop")
    assert not stopped["running"] and stopped["desired"] == "stopped"
    started = agent.client.call("POST", f"/v1/vtms/{vm}/start")
    assert started["running"] and started["pid"] != created["pid"]
    assert started["vek_name"] == created["vek_name"]  # the same vTM: its vEK survived the restart
    agent.client.call("DELETE", f"/v1/vtms/{vm}")
    assert agent.client.call("GET", "/v1/vtms")["vtms"] == []
    assert not (agent.paths.vtm(vm)).exists()


def test_one_vtm_per_vm(agent):
    """VMM-F2: a VM has one vTM for life; a second create is refused and changes nothing."""
    vm = str(uuid.uuid4())
    first = agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    with pytest.raises(Conflict, match="already has a vTM"):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm.upper()})
    again = agent.client.call("GET", f"/v1/vtms/{vm}")
    assert again["pid"] == first["pid"] and again["vek_name"] == first["vek_name"]


def test_unknown_vm_and_bad_input(agent):
    with pytest.raises(NotFound, match="no vTM"):
        agent.client.call("POST", f"/v1/vtms/{uuid.uuid4()}/start")
    with pytest.raises(InvalidInput, match="not a VM UUID"):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": "not-a-uuid"})
    with pytest.raises(InvalidInput, match="kind"):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4()), "kind": "dsa"})
    with pytest.raises(NotFound, match="no such endpoint"):
        agent.client.call("GET", "/v1/nothing")
    assert agent.client.call("GET", "/v1/vtms")["vtms"] == []  # nothing half-made


def test_vek_certificate_chains_to_the_host_tm(agent, short_tmp):
    """VMM-F4, VMM-S3: the vEK certificate is signed by the host's vTM-manager key, which the host AK
    certified; it is marked virtual and names the host and the VM; the host EK chains to the CA."""
    vm = uuid.uuid4()
    created = agent.client.call("POST", "/v1/vtms", {"vm_uuid": str(vm)})
    der = base64.b64decode(agent.client.call("POST", f"/v1/vtms/{vm}/certificate")["der"])
    cert = x509.load_der_x509_certificate(der)
    keys = load_host_keys(agent.paths)
    manager = parse_public(keys.manager_public)
    now = datetime.now(UTC)
    verified = verify_vek_certificate(cert, manager_public=manager, now=now, host_id="host-a", vm_uuid=vm)
    assert verified.vm_uuid == vm and verified.host_id == "host-a"
    assert is_virtual_tm_certificate(cert)
    assert created["vek_name"].startswith("000b")  # a SHA-256 TPM name
    certify = verify_certify(
        keys.manager_certify_attest,
        keys.manager_certify_signature,
        parse_public(keys.ak_public),
        qualifying_data=manager_qualifying_data("host-a"),
        certified_name=manager.name(),
    )
    assert certify.name == manager.name()
    ca = load_ca(short_tmp / "manufacturer-ca")
    verify_ek_certificate(
        keys.ek_certificate, trust_anchors=[ca.certificate], ek_public=parse_public(keys.ek_public), now=now
    )
    assert not is_virtual_tm_certificate(x509.load_der_x509_certificate(keys.ek_certificate))


def test_every_launch_is_measured_into_pcr_14(agent):
    """VMM-F6: each vTM launch extends host PCR 14 and appends a log event naming the VM and vEK."""
    vms = [str(uuid.uuid4()) for _ in range(2)]
    for vm in vms:
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    agent.client.call("POST", f"/v1/vtms/{vms[0]}/stop")
    agent.client.call("POST", f"/v1/vtms/{vms[0]}/start")
    evidence = agent.client.call("POST", "/v1/deep-quote", {"qualifying_data": "00" * 32})
    log = parse_tcg_log(base64.b64decode(evidence["launch_log"]))
    launches = [parse_launch_event_data(e.data) for e in log.events if e.pcr == LAUNCH_PCR]
    assert [launch.vm_uuid for launch in launches] == [vms[0], vms[1], vms[0]]
    replayed = replay_tcg_log(log)[HashAlg.SHA256][LAUNCH_PCR]
    assert replayed.hex() == evidence["pcrs"]["sha256"][str(LAUNCH_PCR)]
    assert replayed != bytes(32)


def test_cli_lifecycle(agent, capsys):
    """`vroot vtm` against the running agent: one-line output, exit 2 for bad input or unknown VMs."""
    from vroot.cli.main import run

    host = ["--host", str(agent.directory)]
    vm = str(uuid.uuid4())
    assert run(["vtm", "create", vm, *host]) == 0
    assert f"vTM {vm}: running" in capsys.readouterr().out
    assert run(["vtm", "create", vm, *host]) == 1  # Conflict: a verification-free refusal, exit 1
    assert "already has a vTM" in capsys.readouterr().err
    assert run(["vtm", "list", "--json", *host]) == 0
    assert vm in capsys.readouterr().out
    assert run(["vtm", "stop", vm, *host]) == 0
    assert run(["vtm", "start", vm, *host]) == 0
    assert run(["vtm", "certificate", vm, *host]) == 0
    assert capsys.readouterr().out.count("BEGIN CERTIFICATE") == 1
    assert run(["vtm", "destroy", vm, *host]) == 0
    capsys.readouterr()
    assert run(["vtm", "start", "nope", *host]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a VM UUID" in err
    assert run(["vtm", "list", "--host", "/nonexistent/host"]) == 1
    assert "no host agent answers" in capsys.readouterr().err


def test_rsa_vek_option(agent):
    """VMM-F4: an RSA-2048 vEK instead of the ECC P-256 default, certified the same way, in the RSA
    EK certificate index."""
    vm = uuid.uuid4()
    created = agent.client.call("POST", "/v1/vtms", {"vm_uuid": str(vm), "kind": "rsa"})
    assert created["kind"] == "rsa"
    der = base64.b64decode(agent.client.call("POST", f"/v1/vtms/{vm}/certificate")["der"])
    keys = load_host_keys(agent.paths)
    verified = verify_vek_certificate(der, manager_public=parse_public(keys.manager_public), now=datetime.now(UTC),
                                      vm_uuid=vm)  # fmt: skip
    assert verified.vek_public_key.key_size == 2048
    with agent.agent.manager.open_vtm(str(vm)) as vtm:
        assert vtm.ek_certificate("rsa") == der
        assert vtm.ek_certificate("ecc") is None
