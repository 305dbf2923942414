"""`vroot host init --ek-kind rsa` (HW-F2): a real TM whose manufacturer wrote only an RSA EK
certificate into NV is provisioned from the command line; without the option vroot looks for the
ECC EK certificate and says it is missing; an unknown kind is a usage error (exit 2)."""

from __future__ import annotations

import pytest
from vtm_helpers import oem_tm

from vroot.cli.main import run
from vroot.host import HostPaths, load_host_keys
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


@pytest.fixture
def rsa_only_tm(short_tmp):
    with oem_tm(short_tmp, "rsa") as proc:
        yield proc


def _init(short_tmp, tcti: str, name: str, *extra: str) -> int:  # noqa: ANN001
    return run(["host", "init", str(short_tmp / name), "--tcti", tcti, "--host-id", name,
                "--boot-log", str(short_tmp / "binary_bios_measurements"),
                "--ima-log", str(short_tmp / "binary_runtime_measurements"), *extra])  # fmt: skip


def test_hw_f2_host_init_with_an_rsa_ek_certificate(rsa_only_tm, short_tmp, capsys):
    assert _init(short_tmp, rsa_only_tm.tcti, "ecc-host") == 2  # the default looks for the ECC EK certificate
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "EK certificate" in err, err

    assert _init(short_tmp, rsa_only_tm.tcti, "rsa-host", "--ek-kind", "rsa") == 0, capsys.readouterr().err
    keys = load_host_keys(HostPaths(short_tmp / "rsa-host"))
    assert parse_public(keys.ek_public).type.name == "RSA"
    assert "ek_kind = \"rsa\"" in (short_tmp / "rsa-host" / "host.toml").read_text()

    assert _init(short_tmp, rsa_only_tm.tcti, "dsa-host", "--ek-kind", "dsa") == 2
    assert "EK kind must be ecc or rsa" in capsys.readouterr().err
