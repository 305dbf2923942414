"""Plan a measured boot: what each stage extends, and the log events that describe it (pure).

`plan_boot` turns a chain and the bytes of its images into `Measurement`s in execution order,
and the TCG and IMA logs a real platform would have written for them (IM-1: digests for the
PCRs, descriptions for the log). It does no I/O: images come through `read`, and nothing is
extended here; `vroot.measure.boot` applies a plan to a (v)TM.

Digests follow the PC Client profile where it is precise: EV_S_CRTM_VERSION, EV_SEPARATOR,
EV_PLATFORM_CONFIG_FLAGS, EV_EFI_VARIABLE_DRIVER_CONFIG and EV_IPL text events digest their
event data; firmware blobs, boot applications and IPL files digest the image (a real firmware
hashes a PE image with Authenticode; the simulation hashes the whole file, which is what changes
when a file is tampered). IMA entries are `ima-ng` with SHA-256 file digests, preceded by the
kernel's `boot_aggregate` over the replayed PCRs 0-9.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    UnverifiedImaLog,
    UnverifiedTcgLog,
    efi_file_device_path,
    efi_image_load_event,
    efi_variable_data,
    ima_ng_entry,
    ipl_string,
    platform_firmware_blob2,
    replay_tcg_log,
    scrtm_version,
    separator,
)
from vroot.measure._chain import Stage, StageKind
from vroot.tpm2 import HashAlg

__all__ = ["BootPlan", "Measurement", "plan_boot"]

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
_FIRMWARE_BASE = 0xFFC0_0000
IMA_PCR = 10
BOOT_AGGREGATE = "boot_aggregate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One extend: `stage` (None for the kernel's boot_aggregate) into `pcr`, per bank."""

    stage: Stage | None
    pcr: int
    digests: Mapping[HashAlg, bytes]
    description: str
    tcg_index: int | None = None  # index in the TCG log, for firmware-phase measurements
    ima_index: int | None = None  # index in the IMA log, for runtime measurements


@dataclass(frozen=True, slots=True, kw_only=True)
class BootPlan:
    """A whole boot: measurements in order, and the logs that describe them."""

    banks: tuple[HashAlg, ...]
    measurements: tuple[Measurement, ...]
    tcg_log: UnverifiedTcgLog
    ima_log: UnverifiedImaLog


def _tcg_event(stage: Stage, content: bytes | None) -> tuple[EventType, bytes, bytes | None]:
    """(event type, event data, bytes whose digest is extended or None for the data itself)."""
    kind = stage.kind
    if kind is StageKind.SCRTM_VERSION:
        version = content.decode("utf-8", "replace").strip() if content else stage.name
        return EventType.EV_S_CRTM_VERSION, scrtm_version(version), None
    if kind is StageKind.FIRMWARE_BLOB:
        assert content is not None
        data = platform_firmware_blob2(stage.file or stage.name, _FIRMWARE_BASE, len(content))
        return EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, data, content
    if kind is StageKind.CONFIG_FLAGS:
        assert content is not None
        return EventType.EV_PLATFORM_CONFIG_FLAGS, content, None
    if kind is StageKind.SECURE_BOOT:
        return (
            EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
            efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"),
            None,
        )
    if kind is StageKind.SEPARATOR:
        return EventType.EV_SEPARATOR, separator(), None
    if kind is StageKind.APPLICATION:
        assert content is not None
        path = efi_file_device_path(stage.path) if stage.path else b""
        return EventType.EV_EFI_BOOT_SERVICES_APPLICATION, efi_image_load_event(length=len(content), device_path=path), content
    if kind is StageKind.IPL_FILE:
        assert content is not None
        return EventType.EV_IPL, ipl_string(stage.path or stage.file or stage.name), content
    if kind is StageKind.IPL_TEXT:
        assert content is not None
        text = content.decode("utf-8", "replace").strip()
        return EventType.EV_IPL, ipl_string(f"kernel_cmdline: {text}"), None
    raise ValueError(f"stage {stage.name}: {kind.value} is not a firmware-phase stage")


def _boot_aggregate(tcg_log: UnverifiedTcgLog, alg: HashAlg) -> bytes:
    """IMA's boot_aggregate: H(PCR 0..9) of `alg`'s bank (PCR 0..7 for SHA-1), as Linux computes it."""
    pcrs = replay_tcg_log(tcg_log)[alg]
    last = 7 if alg is HashAlg.SHA1 else 9
    return alg.digest(b"".join(pcrs[i] for i in range(last + 1)))


def plan_boot(
    chain: Iterable[Stage],
    read: Callable[[str], bytes],
    *,
    banks: Iterable[HashAlg],
    ima_alg: HashAlg = HashAlg.SHA256,
) -> BootPlan:
    """The measurements of booting `chain` with images from `read(file name)`, into `banks`.

    Proves nothing; it describes what an honest platform does. The caller applies it to a TM and
    keeps the logs; a verifier later replays those logs against a quote.
    """
    banks = tuple(HashAlg(b) for b in banks)
    builder = TcgLogBuilder(banks=banks)
    measurements: list[Measurement] = []
    ima_entries = []
    for stage in chain:
        content = read(stage.file) if stage.file else None
        if stage.kind is StageKind.IMA:
            if not ima_entries:
                aggregate = _boot_aggregate(builder.build(), ima_alg)
                ima_entries.append(ima_ng_entry(BOOT_AGGREGATE, aggregate, alg=ima_alg, pcr=IMA_PCR))
                measurements.append(_ima_measurement(None, ima_entries[-1], len(ima_entries) - 1, banks))
            assert content is not None
            entry = ima_ng_entry(stage.path or stage.file or stage.name, ima_alg.digest(content), alg=ima_alg,
                                 pcr=stage.pcr)  # fmt: skip
            ima_entries.append(entry)
            measurements.append(_ima_measurement(stage, entry, len(ima_entries) - 1, banks))
            continue
        event_type, data, measured = _tcg_event(stage, content)
        event = builder.add(stage.pcr, event_type, data, measured=measured)
        measurements.append(
            Measurement(
                stage=stage,
                pcr=stage.pcr,
                digests=event.digests,
                description=f"{stage.measured_by} measured {stage.name}",
                tcg_index=event.index,
            )
        )
    return BootPlan(
        banks=banks,
        measurements=tuple(measurements),
        tcg_log=builder.build(),
        ima_log=UnverifiedImaLog(entries=tuple(ima_entries), format="binary"),
    )


def _ima_measurement(stage: Stage | None, entry, index: int, banks: tuple[HashAlg, ...]) -> Measurement:  # noqa: ANN001
    digests = {
        alg: entry.template_hash if alg is HashAlg.SHA1 else alg.digest(entry.template_data) for alg in banks
    }
    what = stage.name if stage else BOOT_AGGREGATE
    by = stage.measured_by if stage else "kernel"
    return Measurement(
        stage=stage,
        pcr=entry.pcr,
        digests=MappingProxyType(digests),
        description=f"{by} measured {what} ({entry.path})",
        ima_index=index,
    )
