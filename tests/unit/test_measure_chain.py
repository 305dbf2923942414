"""Transitive trust as a simulated platform (TT-1, TT-2, TT-3, IM-1), pure: PCRs kept in software.

The swtpm version of these checks is tests/tpm/test_measure_swtpm.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import pytest

from vroot.errors import ChainBroken, NotFound
from vroot.eventlog import (
    EventType,
    UnverifiedImaLog,
    parse_ima_log,
    parse_tcg_log,
    replay_ima_log,
    replay_tcg_log,
)
from vroot.measure import (
    HOST_CHAIN,
    VM_CHAIN,
    StageKind,
    diff_stages,
    measured_boot,
    verify_chain,
    write_images,
)
from vroot.tpm2 import HashAlg

BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384)


class SoftwarePcrs:
    """PCR banks in software: a stand-in for a TM in pure-logic tests only."""

    def __init__(self, banks: Iterable[HashAlg] = BANKS) -> None:
        self.banks = tuple(banks)
        self.values = {
            alg: {i: (b"\xff" if 17 <= i <= 22 else b"\x00") * alg.digest_size for i in range(24)}
            for alg in self.banks
        }

    def pcr_banks(self) -> tuple[HashAlg, ...]:
        return self.banks

    def pcr_read(self, selection=None):  # noqa: ANN001
        return {alg: dict(v) for alg, v in self.values.items()}

    def pcr_extend(self, pcr: int, digests: Mapping[HashAlg, bytes]) -> None:
        for alg, digest in digests.items():
            self.values[alg][pcr] = alg.digest(self.values[alg][pcr] + digest)


@pytest.fixture
def host(tmp_path):
    images = write_images(tmp_path / "host", HOST_CHAIN)
    tpm = SoftwarePcrs()
    return tpm, images, measured_boot(tpm, HOST_CHAIN, images)


def _replayed(record) -> dict[HashAlg, dict[int, bytes]]:
    tcg = replay_tcg_log(parse_tcg_log(record.tcg_log))
    ima = replay_ima_log(parse_ima_log(record.ima_log), banks=BANKS)
    out = {alg: dict(tcg[alg]) for alg in BANKS}
    for alg in BANKS:
        out[alg].update(ima[alg])
    return out


def test_host_boot_logs_replay_to_the_pcrs_extended(host):
    """IM-1: the digests went to the PCRs, the descriptions to the logs, and they agree."""
    tpm, _, record = host
    replayed = _replayed(record)
    for alg in BANKS:
        for pcr in (0, 1, 4, 5, 7, 8, 9, 10):
            assert replayed[alg][pcr] == tpm.values[alg][pcr], (alg, pcr)
    assert tpm.values[HashAlg.SHA256][14] == bytes(32)  # vTM launches come later (issue 3)


def test_ascii_and_binary_ima_logs_agree(host):
    _, _, record = host
    assert parse_ima_log(record.ima_log).entries == parse_ima_log(record.ima_log_ascii).entries


def test_host_chain_links_verify(host):
    """TT-1/TT-2: CRTM -> firmware -> boot loader -> kernel -> VMM -> vTM manager, in order."""
    _, _, record = host
    chain = verify_chain(HOST_CHAIN, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))
    assert [s.name for s in chain.stages] == [s.name for s in HOST_CHAIN]
    vmm_image = host[1].read("qemu-system-x86_64")
    assert chain.digests["vmm"][HashAlg.SHA256] == HashAlg.SHA256.digest(vmm_image)


def test_vm_chain_links_verify(tmp_path):
    """TT-3: virtual firmware -> guest boot loader -> kernel -> applications."""
    images = write_images(tmp_path / "vm", VM_CHAIN)
    record = measured_boot(SoftwarePcrs(), VM_CHAIN, images)
    verify_chain(VM_CHAIN, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))


def test_changed_boot_file_changes_its_pcr_and_names_the_stage(tmp_path, host):
    tpm, images, record = host
    (images.path / "bootloader.efi").write_bytes(b"tampered boot loader")
    tpm2 = SoftwarePcrs()
    record2 = measured_boot(tpm2, HOST_CHAIN, images)
    changed = [alg for alg in BANKS if tpm.values[alg][4] != tpm2.values[alg][4]]
    assert changed == list(BANKS)
    assert tpm.values[HashAlg.SHA256][0] == tpm2.values[HashAlg.SHA256][0]
    seen = verify_chain(HOST_CHAIN, parse_tcg_log(record2.tcg_log), parse_ima_log(record2.ima_log))
    diffs = diff_stages(record.plan, seen)
    assert [d.stage for d in diffs] == ["boot-loader"]
    assert diffs[0].pcr == 4 and diffs[0].expected != diffs[0].seen


def test_same_images_give_the_same_pcrs(tmp_path):
    a = write_images(tmp_path / "a", HOST_CHAIN)
    b = write_images(tmp_path / "b", HOST_CHAIN)
    ta, tb = SoftwarePcrs(), SoftwarePcrs()
    measured_boot(ta, HOST_CHAIN, a)
    measured_boot(tb, HOST_CHAIN, b)
    assert ta.values == tb.values
    tc = SoftwarePcrs()
    measured_boot(tc, HOST_CHAIN, write_images(tmp_path / "c", HOST_CHAIN, flavour="other-build"))
    assert tc.values[HashAlg.SHA256][0] != ta.values[HashAlg.SHA256][0]


def test_missing_image_is_not_found(tmp_path):
    images = write_images(tmp_path / "h", HOST_CHAIN)
    (images.path / "vmlinuz").unlink()
    with pytest.raises(NotFound, match="vmlinuz"):
        measured_boot(SoftwarePcrs(), HOST_CHAIN, images)


# --- one negative test per link check -------------------------------------------------------------


def test_stage_measured_out_of_order_breaks_the_chain(host):
    _, _, record = host
    reordered = list(HOST_CHAIN)
    i = next(i for i, s in enumerate(reordered) if s.name == "kernel")
    reordered[i], reordered[i + 1] = reordered[i + 1], reordered[i]  # initrd before kernel
    with pytest.raises(ChainBroken, match="stage initrd"):
        verify_chain(reordered, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))


def test_measurer_not_measured_first_breaks_the_chain(host):
    _, _, record = host
    chain = list(HOST_CHAIN)
    i = next(i for i, s in enumerate(chain) if s.name == "kernel")
    chain[i] = dataclasses.replace(chain[i], measured_by="vtm-manager")  # measured by a later stage
    with pytest.raises(ChainBroken, match="measurer vtm-manager was not measured"):
        verify_chain(chain, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))


def test_missing_stage_breaks_the_chain(host):
    _, _, record = host
    log = parse_tcg_log(record.tcg_log)
    dropped = log.replace(events=tuple(e for e in log.events if e.pcr != 9))
    with pytest.raises(ChainBroken, match="stage kernel"):
        verify_chain(HOST_CHAIN, dropped, parse_ima_log(record.ima_log))


def test_extra_event_breaks_the_chain(host):
    _, _, record = host
    log = parse_tcg_log(record.tcg_log)
    extra = log.replace(events=(*log.events, log.events[-1]))
    with pytest.raises(ChainBroken, match="not a stage of the chain"):
        verify_chain(HOST_CHAIN, extra, parse_ima_log(record.ima_log))


def test_wrong_event_type_breaks_the_chain(host):
    _, _, record = host
    log = parse_tcg_log(record.tcg_log)
    events = [
        e.replace(event_type=EventType.EV_EFI_BOOT_SERVICES_DRIVER)
        if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
        else e
        for e in log.events
    ]
    with pytest.raises(ChainBroken, match="stage boot-loader"):
        verify_chain(HOST_CHAIN, log.replace(events=tuple(events)), parse_ima_log(record.ima_log))


def test_boot_aggregate_must_match_the_firmware_log(host, tmp_path):
    _, images, record = host
    other = write_images(tmp_path / "other", HOST_CHAIN, flavour="other-build")
    other_record = measured_boot(SoftwarePcrs(), HOST_CHAIN, other)
    with pytest.raises(ChainBroken, match="boot_aggregate"):
        verify_chain(HOST_CHAIN, parse_tcg_log(record.tcg_log), parse_ima_log(other_record.ima_log))


def test_runtime_stage_missing_from_ima_breaks_the_chain(host):
    _, _, record = host
    ima = parse_ima_log(record.ima_log)
    short = UnverifiedImaLog(entries=ima.entries[:-1], format=ima.format)
    with pytest.raises(ChainBroken, match="stage swtpm"):
        verify_chain(HOST_CHAIN, parse_tcg_log(record.tcg_log), short)


def test_every_chain_stage_kind_is_used():
    kinds = {s.kind for s in HOST_CHAIN} | {s.kind for s in VM_CHAIN}
    assert kinds == set(StageKind)
