"""A host whose TM is reached by a TCTI (`vroot host init --tcti ...`), as on a real server.

There is no /dev/tpmrm0 here: the "hardware" TM is a swtpm started outside vroot, with an EK
certificate its "manufacturer" wrote into NV, and firmware that measured a boot into it and left
its event logs where the kernel would (here: files named in host.toml).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from vtm_helpers import oem_tm

from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence
from vroot.cli.main import run
from vroot.errors import NotFound
from vroot.host import HostConfig, init_host
from vroot.tm.swtpm import start_swtpm

pytestmark = pytest.mark.tpm


@pytest.fixture
def hardware(short_tmp):
    """A TM with a manufacturer's EK certificate and a measured boot, and the firmware's logs."""
    with oem_tm(short_tmp) as proc:
        yield proc


def test_device_host_provisions_runs_vtms_and_deep_quotes(hardware, short_tmp, agent_factory, capsys):
    directory = short_tmp / "server-1"
    assert run(["host", "init", str(directory), "--tcti", hardware.tcti, "--host-id", "server-1",
                "--boot-log", str(short_tmp / "binary_bios_measurements"),
                "--ima-log", str(short_tmp / "binary_runtime_measurements")]) == 0  # fmt: skip
    assert "host server-1 provisioned" in capsys.readouterr().out
    agent = agent_factory(directory)
    vm = str(uuid.uuid4())
    assert agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})["running"]
    root = bytes(32)
    evidence = UnverifiedHostEvidence.from_json(
        agent.client.call("POST", "/v1/deep-quote", {"qualifying_data": root.hex()})
    )
    verified = verify_host_evidence(evidence, qualifying_data=root)
    assert [launch.vm_uuid for launch in verified.launches] == [vm]
    assert agent.agent.host.process is None  # vroot does not own a real host's TM


def test_device_host_without_an_ek_certificate_is_refused(short_tmp):
    proc = start_swtpm(short_tmp / "bare", unix_path=short_tmp / "bare.sock")
    try:
        with pytest.raises(NotFound, match="no ECC EK certificate"):
            init_host(short_tmp / "h", config=HostConfig(host_id="h", mode="device", tcti=proc.tcti),
                      now=datetime.now(UTC), serial=1)  # fmt: skip
    finally:
        proc.stop()
