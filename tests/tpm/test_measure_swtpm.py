"""Transitive trust into a real TPM 2.0 (swtpm): the logs replay to exactly the PCRs the TM reports.

TT-1, TT-2 (host chain), TT-3 (VM chain), IM-1, HW-F3 (every PCR bank).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from vroot.eventlog import parse_ima_log, parse_tcg_log, replay_ima_log, replay_tcg_log
from vroot.measure import HOST_CHAIN, VM_CHAIN, measured_boot, verify_chain, write_images

pytestmark = pytest.mark.tpm


def _replay_all(record, banks):
    tcg = replay_tcg_log(parse_tcg_log(record.tcg_log))
    ima = replay_ima_log(parse_ima_log(record.ima_log), banks=banks)
    out = {alg: dict(tcg[alg]) for alg in banks}
    for alg in banks:
        out[alg].update(ima[alg])
    return out


@pytest.mark.parametrize("chain", [HOST_CHAIN, VM_CHAIN], ids=["host", "vm"])
def test_replayed_logs_equal_the_swtpm_pcrs_in_every_bank(tm, tmp_path, chain):
    images = write_images(tmp_path / "images", chain)
    banks = tm.pcr_banks()
    assert len(banks) >= 2
    record = measured_boot(tm, chain, images)
    assert record.plan.banks == banks
    reported = tm.pcr_read()
    replayed = _replay_all(record, banks)
    for alg in banks:
        assert replayed[alg] == {i: reported[alg][i] for i in range(24)}, alg.bank
    verify_chain(chain, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))


def test_tpm2_eventlog_reads_the_produced_log(tm, tmp_path):
    """The TCG log is a genuine crypto-agile log: tpm2-tools computes the same PCRs."""
    tool = shutil.which("tpm2_eventlog")
    assert tool, "tpm2_eventlog (tpm2-tools) is required"
    images = write_images(tmp_path / "images", HOST_CHAIN)
    record = measured_boot(tm, HOST_CHAIN, images)
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(record.tcg_log)
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=30, check=True).stdout
    doc = yaml.safe_load(out)
    reported = tm.pcr_read()
    compared = 0
    for bank, values in doc["pcrs"].items():
        alg = next(a for a in reported if a.bank == bank)
        for index, value in values.items():
            assert (
                bytes.fromhex(
                    f"{value:x}".rjust(alg.digest_size * 2, "0")
                    if isinstance(value, int)
                    else str(value).removeprefix("0x")
                )
                == reported[alg][int(index)]
            )
            compared += 1
    assert compared >= 2 * 9


def test_replay_json_of_the_cli_matches_the_tm(tm, tmp_path, capsys):
    from vroot.cli.main import run

    record = measured_boot(tm, HOST_CHAIN, write_images(tmp_path / "images", HOST_CHAIN))
    (tmp_path / "log.bin").write_bytes(record.tcg_log)
    (tmp_path / "ima.bin").write_bytes(record.ima_log)
    reported = tm.pcr_read()
    assert run(["eventlog", "replay", str(tmp_path / "log.bin"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for alg in reported:
        assert bytes.fromhex(doc["pcrs"][alg.bank]["4"]) == reported[alg][4]
    assert run(["eventlog", "replay", str(tmp_path / "ima.bin"), "--ima", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        bytes.fromhex(doc["pcrs"]["sha256"]["10"])
        == reported[next(a for a in reported if a.bank == "sha256")][10]
    )
