"""Data protection for guests through their vTM (DP-1 binding, DP-2 sealing), across restarts."""

from __future__ import annotations

import base64
import uuid

import pytest

from vroot.cli.main import run
from vroot.errors import TmPolicyFailed, VerificationError
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_sealed_and_bound_data_survive_vtm_and_agent_restarts(host_dir, agent_factory):
    agent = agent_factory(host_dir)
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    secret = b"disk encryption key of the guest"
    sealed = agent.client.call("POST", f"/v1/vtms/{vm}/seal", {"data": _b64(secret), "pcrs": [0, 7]})["blob"]
    pem = agent.client.call("POST", f"/v1/vtms/{vm}/binding-key")["pem"].encode()
    from vroot.guest import bind

    bound = bind(pem, b"bound for this vTM only", rng=lambda n: bytes(range(n)))
    agent.client.call("POST", f"/v1/vtms/{vm}/stop")
    agent.client.call("POST", f"/v1/vtms/{vm}/start")
    agent.stop(stop_vtms=True, stop_tm=False)
    agent = agent_factory(host_dir)  # restarts the vTM (desired: running)
    assert agent.client.call("GET", f"/v1/vtms/{vm}")["running"]
    out = agent.client.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": sealed})
    assert base64.b64decode(out["data"]) == secret
    out = agent.client.call("POST", f"/v1/vtms/{vm}/unbind", {"blob": _b64(bound)})
    assert base64.b64decode(out["data"]) == b"bound for this vTM only"


def test_unseal_fails_after_the_guest_state_changes(agent):
    """DP-2: a change of a sealed-to vPCR keeps the data sealed; the error names the vPCR."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    sealed = agent.client.call("POST", f"/v1/vtms/{vm}/seal", {"data": _b64(b"x"), "pcrs": [4, 9]})["blob"]
    with agent.agent.manager.open_vtm(vm) as vtm:
        vtm.pcr_extend(9, {HashAlg.SHA256: bytes(32)})
    with pytest.raises(TmPolicyFailed, match="9"):
        agent.client.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": sealed})


def test_only_the_bound_vtm_opens_bound_data(agent):
    """DP-1: another VM's vTM cannot open the data, nor the sealed blob."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    for vm in (a, b):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    from vroot.guest import bind

    pem = agent.client.call("POST", f"/v1/vtms/{a}/binding-key")["pem"].encode()
    bound = bind(pem, b"for a", rng=lambda n: b"\x01" * n)
    with pytest.raises(VerificationError):
        agent.client.call("POST", f"/v1/vtms/{b}/unbind", {"blob": _b64(bound)})
    sealed = agent.client.call("POST", f"/v1/vtms/{a}/seal", {"data": _b64(b"for a"), "pcrs": [0]})["blob"]
    with pytest.raises(VerificationError):
        agent.client.call("POST", f"/v1/vtms/{b}/unseal", {"blob": sealed})


def test_cli_seal_unseal_bind_unbind(agent, tmp_path, capsys):
    vm = str(uuid.uuid4())
    host = ["--host", str(agent.directory)]
    assert run(["vtm", "create", vm, *host]) == 0
    (tmp_path / "secret").write_bytes(b"guest secret")
    assert run(["vtm", "seal", vm, "--pcrs", "0,7", "--in", str(tmp_path / "secret"),
                "--out", str(tmp_path / "sealed"), *host]) == 0  # fmt: skip
    assert (
        run(["vtm", "unseal", vm, "--in", str(tmp_path / "sealed"), "--out", str(tmp_path / "back"), *host])
        == 0
    )
    assert (tmp_path / "back").read_bytes() == b"guest secret"
    assert (
        run(["vtm", "bind", vm, "--in", str(tmp_path / "secret"), "--out", str(tmp_path / "bound"), *host])
        == 0
    )
    assert (
        run(["vtm", "unbind", vm, "--in", str(tmp_path / "bound"), "--out", str(tmp_path / "open"), *host])
        == 0
    )
    assert (tmp_path / "open").read_bytes() == b"guest secret"
    capsys.readouterr()
    (tmp_path / "garbage").write_bytes(b"not a blob")
    assert (
        run(["vtm", "unseal", vm, "--in", str(tmp_path / "garbage"), "--out", str(tmp_path / "x"), *host])
        == 2
    )
    assert "vroot: error:" in capsys.readouterr().err
    assert run(["vtm", "start", str(uuid.uuid4()), *host]) == 2  # unknown VM
