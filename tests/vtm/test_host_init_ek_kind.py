"""`vroot host init --ek-kind rsa` (HW-F2): a real TM whose manufacturer wrote only an RSA EK
certificate into NV is provisioned from the command line; without the option vroot looks for the
ECC EK certificate and says it is missing; an unknown kind is a usage error (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.cli.main import run
from vroot.host import HostPaths, load_host_keys
from vroot.measure import HOST_CHAIN, measured_boot, write_images
from vroot.pki import create_ca, issue_ek_certificate
from vroot.tm import TmClient
from vroot.tm.swtpm import start_swtpm
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


@pytest.fixture
def rsa_only_tm(short_tmp):
    proc = start_swtpm(short_tmp / "hw", unix_path=short_tmp / "hw.sock")
    try:
        now = datetime.now(UTC)
        with TmClient.open(proc.tcti) as tm:
            with tm.create_primary_ek("rsa") as ek:
                cert = issue_ek_certificate(create_ca(common_name="OEM CA", now=now), parse_public(ek.public),
                                            now=now, serial=77)  # fmt: skip
            tm.write_ek_certificate(cert.public_bytes(Encoding.DER), "rsa")
            record = measured_boot(tm, HOST_CHAIN, write_images(short_tmp / "firmware", HOST_CHAIN))
        (short_tmp / "bios.bin").write_bytes(record.tcg_log)
        (short_tmp / "ima.bin").write_bytes(record.ima_log)
        yield proc
    finally:
        proc.stop()


def _init(short_tmp, tcti: str, name: str, *extra: str) -> int:  # noqa: ANN001
    return run(["host", "init", str(short_tmp / name), "--tcti", tcti, "--host-id", name,
                "--boot-log", str(short_tmp / "bios.bin"), "--ima-log", str(short_tmp / "ima.bin"), *extra])  # fmt: skip


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
