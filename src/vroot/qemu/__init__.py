"""vroot.qemu: a small QEMU launcher to boot real virtual firmware (OVMF) against a vTM.

    from vroot.qemu import boot_firmware
    from vroot.tm import start_swtpm

    vtm = start_swtpm(state_dir, unix_path=sock, ctrl_only=True)      # QEMU mode: control socket only
    with boot_firmware(vtm.ctrl_path, workdir=tmp) as boot:           # OVMF measures PCR 0-7
        print(boot.boot_seconds)
    # QEMU is gone (SIGKILL by PID: a clean QEMU shutdown would make swtpm exit and lose the PCRs)
    with vtm.data_channel() as tcti, TmClient.open(tcti) as tm:
        tm.pcr_read({HashAlg.SHA256: range(8)})

`boot_firmware` starts `qemu-system-x86_64 -accel tcg` (firmware cannot run under this sandbox's
KVM, and QEMU stays up paused when KVM fails, so a watchdog is needed anyway), waits until the
serial console shows a marker (by default OVMF's "UEFI Interactive Shell" banner, by which time
every PCR 0-7 measurement is done) and returns a `QemuBoot`. On a timeout or an early exit QEMU
is killed by PID and `Unavailable` carries the tail of its output. Nothing global is kept.
"""

from vroot.qemu._boot import DEFAULT_FIRMWARE, QemuBoot, boot_firmware

__all__ = ["DEFAULT_FIRMWARE", "QemuBoot", "boot_firmware"]
