"""vroot agrees with tpm2-tools, an independent parser: with the expected `tpm2_eventlog` YAML of
tpm2-tools' own test fixtures (event types, per-event digests, PCRs), and with the installed
`/usr/bin/tpm2_eventlog` on corpus logs and on logs vroot's `TcgLogBuilder` writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    efi_action,
    efi_image_load_event,
    efi_variable_data,
    encode_tcg_log,
    event_type_name,
    hcrtm_event,
    ipl_string,
    parse_tcg_log,
    platform_firmware_blob,
    replay_tcg_log,
    scrtm_version,
    separator,
    startup_locality,
)
from vroot.tpm2 import HashAlg

# As tests/conftest.py (a bare `conftest` import would be ambiguous: tests/tpm has one too).
CORPORA = Path(
    os.environ.get("VROOT_CORPORA", Path(__file__).resolve().parents[2].parent / "shared" / "corpora")
)

pytestmark = pytest.mark.corpora

TOOLS = CORPORA / "tpm2-tools"
FIXTURES = sorted(p.name for p in TOOLS.glob("*.bin"))


def _expected_yaml(name: str):
    for path in (TOOLS / "event-pretty-39" / f"{name}.yaml", TOOLS / f"{name}.yaml"):
        if path.is_file():
            return path.read_text()
    return None


def _pcrs_section(text: str) -> dict[str, dict[int, str]]:
    """The `pcrs:` mapping of tpm2_eventlog output, as bank -> PCR -> lowercase hex."""
    section = yaml.safe_load(text[text.rindex("\npcrs:") :]) or {}
    out = {}
    for bank, values in (section.get("pcrs") or {}).items():
        size = HashAlg.from_bank(bank).digest_size
        out[bank] = {
            int(i): f"{v:0{2 * size}x}" if isinstance(v, int) else str(v)[2:].lower()
            for i, v in values.items()
        }
    return out


def _ours(log, pcrs: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
    replayed = replay_tcg_log(log)
    return {
        bank: {i: replayed[HashAlg.from_bank(bank)][i].hex() for i in values} for bank, values in pcrs.items()
    }


WITH_YAML = [name for name in FIXTURES if _expected_yaml(name) is not None]


def test_every_fixture_has_expected_output():
    assert set(WITH_YAML) == set(FIXTURES) and len(FIXTURES) == 12


@pytest.mark.parametrize("name", WITH_YAML)
def test_pcrs_agree_with_expected_tpm2_eventlog_output(name):
    log = parse_tcg_log((TOOLS / name).read_bytes(), source=name)
    theirs = _pcrs_section(_expected_yaml(name))
    assert _ours(log, theirs) == theirs
    expected = json.loads((TOOLS / f"{name}.expected.json").read_text())["pcrs"]
    assert {bank: {int(i): v for i, v in values.items()} for bank, values in expected.items()} == theirs


@pytest.mark.parametrize("name", [n for n in WITH_YAML if n != "event-uefi-sha1-log.bin"])
def test_event_types_digests_and_sizes_agree(name):
    """event-uefi-sha1-log.bin is excluded: its expected `events:` is not strict YAML (MANIFEST)."""
    text = _expected_yaml(name)
    doc = yaml.safe_load(text)
    log = parse_tcg_log((TOOLS / name).read_bytes())
    assert len(doc["events"]) == len(log.events)
    for theirs, ours in zip(doc["events"], log.events, strict=True):
        assert theirs["EventNum"] == ours.index
        assert theirs["PCRIndex"] == ours.pcr
        assert theirs["EventType"] == event_type_name(int(ours.event_type))
        if "Digests" in theirs:
            assert {d["AlgorithmId"]: d["Digest"] for d in theirs["Digests"]} == {
                alg.bank: digest.hex() for alg, digest in ours.digests.items()
            }
            assert theirs["EventSize"] == len(ours.data)
        else:  # the Spec ID event (TCG_PCR_EVENT): one SHA-1 digest, EventSize as logged
            assert theirs["Digest"] == ours.digests[HashAlg.SHA1].hex()
            assert theirs["EventSize"] == log.spec_id.event_size


def test_moklisttrusted_event_80_string():
    log = parse_tcg_log((TOOLS / "event-moklisttrusted.bin").read_bytes())
    want = "grub_cmd: menuentry UEFI Firmware Settings --id uefi-firmware {\n\t\tfwsetup\n\t}"
    assert log.events[80].data.rstrip(b"\x00").decode() == want


# --- the installed tpm2_eventlog -------------------------------------------------------------

TPM2_EVENTLOG = shutil.which("tpm2_eventlog") or "/usr/bin/tpm2_eventlog"


def _run_tpm2_eventlog(path, *args: str) -> dict[str, dict[int, str]]:
    if not shutil.which(TPM2_EVENTLOG):
        pytest.fail("tpm2_eventlog is not installed (make setup installs tpm2-tools)")
    done = subprocess.run([TPM2_EVENTLOG, *args, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return _pcrs_section(done.stdout)


@pytest.mark.parametrize(
    "name",
    [
        "event-bootorder.bin",
        "event-sd-boot-fedora37.bin",
        "event-uefi-sha1-log.bin",
        "event.bin",
        "event-postcode.bin",
    ],
)
def test_installed_tpm2_eventlog_agrees_on_corpus_logs(name):
    invocation = json.loads((TOOLS / f"{name}.expected.json").read_text())["tpm2_eventlog_invocation"]
    args = ["--eventlog-version=2"] if "--eventlog-version=2" in invocation else []
    theirs = _run_tpm2_eventlog(TOOLS / name, *args)
    assert theirs and _ours(parse_tcg_log((TOOLS / name).read_bytes()), theirs) == theirs


def _pcr0_as_old_tpm2_tools_computes_it(log, alg: HashAlg) -> str:
    """tpm2-tools before 5.5 extends EV_NO_ACTION events and knows no StartupLocality/H-CRTM rule;
    Debian 12 ships 5.4. Newer releases compute PCR 0 as vroot does (DESIGN.md section 2)."""
    value = bytes(alg.digest_size)
    for event in log.measurements:
        if event.pcr == 0:
            value = alg.digest(value + event.digests[alg])
    return value.hex()


def _boot(builder: TcgLogBuilder) -> None:
    builder.add(0, EventType.EV_S_CRTM_VERSION, scrtm_version("vroot vCRTM 1.0"))
    builder.add(
        0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, platform_firmware_blob(0x800000, 0x100000), measured=b"fw"
    )
    builder.add(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                efi_variable_data("8be4df61-93ca-11d2-aa0d-00e098032b8c", "SecureBoot", b"\x01"))  # fmt: skip
    for pcr in range(8):
        builder.add(pcr, EventType.EV_SEPARATOR, separator())
    builder.add(
        4,
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        efi_image_load_event(length=11),
        measured=b"boot loader",
    )
    builder.add(5, EventType.EV_EFI_ACTION, efi_action("Exit Boot Services Invocation"))
    builder.add(8, EventType.EV_IPL, ipl_string("grub_cmd: linux /vmlinuz"))
    builder.add(9, EventType.EV_IPL, ipl_string("/vmlinuz"), measured=b"kernel image")


@pytest.mark.parametrize(
    ("label", "banks", "legacy", "prelude"),
    [
        ("agile sha1+sha256", (HashAlg.SHA1, HashAlg.SHA256), False, None),
        ("agile sha256+sha384+sha512", (HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512), False, None),
        ("legacy sha1", (HashAlg.SHA1,), True, None),
        ("startup locality 3", (HashAlg.SHA1, HashAlg.SHA256), False, "locality"),
        ("h-crtm", (HashAlg.SHA256,), False, "hcrtm"),
    ],
)
def test_installed_tpm2_eventlog_reads_logs_vroot_builds(tmp_path, label, banks, legacy, prelude):
    builder = TcgLogBuilder(banks=banks, legacy=legacy)
    if prelude == "locality":
        builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    elif prelude == "hcrtm":
        builder.add(0, EventType.EV_EFI_HCRTM_EVENT, hcrtm_event(), measured=b"H-CRTM code")
    _boot(builder)
    log = builder.build()
    path = tmp_path / "built.bin"
    path.write_bytes(encode_tcg_log(log))
    theirs = _run_tpm2_eventlog(path, *([] if legacy else ["--eventlog-version=2"]))
    assert set(theirs) == {alg.bank for alg in banks}
    ours = _ours(log, theirs)
    for bank, values in theirs.items():
        assert set(values) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, label
        for index, value in values.items():
            if index == 0 and prelude is not None and value != ours[bank][0]:
                assert value == _pcr0_as_old_tpm2_tools_computes_it(log, HashAlg.from_bank(bank)), label
            else:
                assert value == ours[bank][index], f"{label}: {bank} PCR {index}"
