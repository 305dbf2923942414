"""The transitive-trust chains of ISO/IEC 27070 clause 6.2 as data.

A chain is an ordered tuple of `Stage`s. Each stage is measured by the stage before it (its
`measured_by`) *before* it runs, into the PCR that DESIGN.md section 2 assigns to it:

    host (TT-1, TT-2): CRTM → firmware → boot loader → kernel → VMM → vTM manager, VMM files
    VM   (TT-3):       vCRTM → virtual firmware → boot loader → kernel → applications

Every stage that measures code or configuration names a file of the platform's image directory
(`ImageDir`), so changing that file changes the PCR, the log and the verdict (IM-1: the digest
goes to the PCR, the description to the log). Stages with `kind` IMA go to the IMA log on PCR 10.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["HOST_CHAIN", "VM_CHAIN", "Stage", "StageKind"]


class StageKind(enum.Enum):
    """How a stage is measured and logged."""

    SCRTM_VERSION = "scrtm-version"  # the (v)CRTM's version string, EV_S_CRTM_VERSION
    FIRMWARE_BLOB = "firmware-blob"  # firmware code, EV_EFI_PLATFORM_FIRMWARE_BLOB2
    CONFIG_FLAGS = "config-flags"  # platform configuration, EV_PLATFORM_CONFIG_FLAGS (data = file)
    SECURE_BOOT = "secure-boot"  # the SecureBoot variable, EV_EFI_VARIABLE_DRIVER_CONFIG
    SEPARATOR = "separator"  # EV_SEPARATOR on PCRs 0-7: pre-OS ends
    APPLICATION = "application"  # an EFI boot application, EV_EFI_BOOT_SERVICES_APPLICATION
    IPL_FILE = "ipl-file"  # a file the boot loader loads, EV_IPL (digest = file)
    IPL_TEXT = "ipl-text"  # a string the boot loader uses (command line), EV_IPL (digest = text)
    IMA = "ima"  # a runtime file, IMA log (ima-ng) on PCR 10


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """One link of a chain: `measured_by` measures `name` (from `file`) into `pcr`, then runs it."""

    name: str
    measured_by: str
    pcr: int
    kind: StageKind
    file: str | None = None  # a file of the image directory; None for stages made of fixed data
    path: str | None = None  # the path the platform reports (IMA path, IPL path)

    def __post_init__(self) -> None:
        if not 0 <= self.pcr <= 23:
            raise ValueError(f"stage {self.name}: PCR {self.pcr} out of range")
        needs_file = self.kind not in (StageKind.SCRTM_VERSION, StageKind.SEPARATOR, StageKind.SECURE_BOOT)
        if needs_file and not self.file:
            raise ValueError(f"stage {self.name}: kind {self.kind.value} needs a file")


def _separators(by: str) -> tuple[Stage, ...]:
    return tuple(
        Stage(name=f"separator-{pcr}", measured_by=by, pcr=pcr, kind=StageKind.SEPARATOR) for pcr in range(8)
    )


HOST_CHAIN: tuple[Stage, ...] = (
    Stage(name="crtm", measured_by="crtm", pcr=0, kind=StageKind.SCRTM_VERSION, file="crtm-version.txt"),
    Stage(name="firmware", measured_by="crtm", pcr=0, kind=StageKind.FIRMWARE_BLOB, file="firmware.bin"),
    Stage(
        name="firmware-config",
        measured_by="firmware",
        pcr=1,
        kind=StageKind.CONFIG_FLAGS,
        file="firmware.cfg",
    ),
    Stage(name="secure-boot", measured_by="firmware", pcr=7, kind=StageKind.SECURE_BOOT),
    *_separators("firmware"),
    Stage(
        name="boot-loader",
        measured_by="firmware",
        pcr=4,
        kind=StageKind.APPLICATION,
        file="bootloader.efi",
        path="\\EFI\\vroot\\bootloader.efi",
    ),
    Stage(
        name="boot-loader-config",
        measured_by="boot-loader",
        pcr=5,
        kind=StageKind.IPL_FILE,
        file="bootloader.cfg",
        path="/boot/bootloader.cfg",
    ),
    Stage(name="kernel-cmdline", measured_by="boot-loader", pcr=8, kind=StageKind.IPL_TEXT, file="cmdline"),
    Stage(
        name="kernel",
        measured_by="boot-loader",
        pcr=9,
        kind=StageKind.IPL_FILE,
        file="vmlinuz",
        path="/boot/vmlinuz",
    ),
    Stage(
        name="initrd",
        measured_by="boot-loader",
        pcr=9,
        kind=StageKind.IPL_FILE,
        file="initrd.img",
        path="/boot/initrd.img",
    ),
    Stage(
        name="vmm",
        measured_by="kernel",
        pcr=10,
        kind=StageKind.IMA,
        file="qemu-system-x86_64",
        path="/usr/bin/qemu-system-x86_64",
    ),
    Stage(
        name="vtm-manager",
        measured_by="vmm",
        pcr=10,
        kind=StageKind.IMA,
        file="vroot-host",
        path="/usr/bin/vroot-host",
    ),
    Stage(
        name="vmm-config",
        measured_by="vtm-manager",
        pcr=10,
        kind=StageKind.IMA,
        file="vmm.conf",
        path="/etc/vroot/vmm.conf",
    ),
    Stage(
        name="swtpm",
        measured_by="vtm-manager",
        pcr=10,
        kind=StageKind.IMA,
        file="swtpm",
        path="/usr/bin/swtpm",
    ),
)
"""The host's chain (TT-1 host, TT-2 VMM): CRTM to the vTM manager and the VMM's files."""


VM_CHAIN: tuple[Stage, ...] = (
    Stage(name="vcrtm", measured_by="vcrtm", pcr=0, kind=StageKind.SCRTM_VERSION, file="vcrtm-version.txt"),
    Stage(
        name="virtual-firmware",
        measured_by="vcrtm",
        pcr=0,
        kind=StageKind.FIRMWARE_BLOB,
        file="vfirmware.bin",
    ),
    Stage(
        name="virtual-platform-config",
        measured_by="virtual-firmware",
        pcr=1,
        kind=StageKind.CONFIG_FLAGS,
        file="vplatform.cfg",
    ),
    Stage(name="secure-boot", measured_by="virtual-firmware", pcr=7, kind=StageKind.SECURE_BOOT),
    *_separators("virtual-firmware"),
    Stage(
        name="guest-boot-loader",
        measured_by="virtual-firmware",
        pcr=4,
        kind=StageKind.APPLICATION,
        file="bootloader.efi",
        path="\\EFI\\BOOT\\BOOTX64.EFI",
    ),
    Stage(
        name="guest-kernel-cmdline",
        measured_by="guest-boot-loader",
        pcr=8,
        kind=StageKind.IPL_TEXT,
        file="cmdline",
    ),
    Stage(
        name="guest-kernel",
        measured_by="guest-boot-loader",
        pcr=9,
        kind=StageKind.IPL_FILE,
        file="vmlinuz",
        path="/boot/vmlinuz",
    ),
    Stage(
        name="guest-initrd",
        measured_by="guest-boot-loader",
        pcr=9,
        kind=StageKind.IPL_FILE,
        file="initrd.img",
        path="/boot/initrd.img",
    ),
    Stage(
        name="application",
        measured_by="guest-kernel",
        pcr=10,
        kind=StageKind.IMA,
        file="app.bin",
        path="/usr/bin/app",
    ),
    Stage(
        name="application-config",
        measured_by="guest-kernel",
        pcr=10,
        kind=StageKind.IMA,
        file="app.conf",
        path="/etc/app.conf",
    ),
)
"""A VM's chain (TT-3): from the virtual firmware (the vCRTM is out of scope) to its applications."""
