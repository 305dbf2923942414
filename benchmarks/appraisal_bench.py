"""vroot's full appraisal of one attestation against keylime 7.14.3's verifier, side by side (issue 4).

    .venv/bin/python benchmarks/appraisal_bench.py [--quick] [--no-profile]

The workload (same evidence for both sides): a swtpm, started and stopped by PID, gets a 60-event
crypto-agile (SHA-1 + SHA-256) UEFI Secure Boot log shaped like a RHEL 9 VM's (S-CRTM version,
firmware blobs, SecureBoot/PK/KEK/db/dbx, boot variables, separators, shim/grub/kernel, grub
commands, kernel command line, initramfs) extended into PCRs 0-9, then 1,000 IMA `ima-ng` entries
(boot_aggregate, then SHA-256 file digests of realistic paths) into PCR 10; an ECC P-256 AK quotes
SHA-256 PCRs 0-10 and 14 (keylime's reference-state policy reads PCR 14; it stays at zero) with a
20-character nonce.

Per attestation, from the bytes an agent sends:

- vroot: AK parsed from its TPM2B_PUBLIC; quote parsed; boot log parsed and replayed; IMA list
  parsed (ASCII, as keylime reads it) and replayed; `verify_quote` over the replayed PCR values;
  `appraise` against a baseline learnt from the same logs (every event of PCRs 0-9 must be in it;
  IMA allowlist of 1,000 paths; two excludes), which proves the IMA entries against quoted PCR 10
  again and judges them: the steps of `vroot.attestation.verify_host_evidence` (less its vTM
  launch log and vTM-manager certification, which keylime has no counterpart for) and then
  `appraisal_input_from_host_evidence` + `appraise`. Verdict: trusted.
- keylime (benchmarks/keylime_appraise.py, in its own venv, timing its own calls): what its verifier
  does with an agent's quote response (`cloud_verifier_common.process_quote_response`):
  `tpm_main.Tpm().check_quote`, that is `tpm_util.checkquote`, measured-boot parsing
  (`mba.bootlog_parse`: tpm2_eventlog + enrichment), the PCR comparison, `mba.bootlog_evaluate`
  with the shipped `example` reference-state policy, and `ima.process_measurement_list` against a
  runtime policy with the same 1,000 paths and excludes. Its refstate and runtime policy are made
  from the same logs by keylime's own `keylime-policy` code. Verdict: no failure.
- the floor: one ECDSA P-256 verification with a preloaded key plus SHA-256 of all the log bytes
  (boot log + ASCII IMA list).

Medians of repeated runs; the table goes to stdout and benchmarks/out/appraisal-results.md. If
vroot misses a goal, a cProfile summary of its side follows the table.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import platform
import pstats
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _timing import fmt, median_call  # noqa: E402

from vroot.attestation import VerifiedHostEvidence, verify_quote  # noqa: E402
from vroot.baseline import (  # noqa: E402
    Appraisal,
    Baseline,
    ImaPolicy,
    Policy,
    appraisal_input_from_host_evidence,
    appraise,
    learn_baseline,
)
from vroot.eventlog import (  # noqa: E402
    EventType,
    TcgLogBuilder,
    UnverifiedImaLog,
    UnverifiedTcgLog,
    efi_action,
    efi_image_load_event,
    efi_variable_data,
    encode_ima_ascii,
    encode_tcg_log,
    ima_ng_entry,
    ipl_string,
    parse_ima_log,
    parse_tcg_log,
    platform_firmware_blob,
    replay_ima_log,
    replay_tcg_log,
    scrtm_version,
    separator,
)
from vroot.tpm2 import HashAlg, QuoteInfo, parse_attest, parse_public  # noqa: E402

KEYLIME_VENV = HERE / ".keylime-venv"
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
BOOT_PCRS = tuple(range(10))
IMA_PCR = 10
QUOTED_PCRS = (*BOOT_PCRS, IMA_PCR, 14)
BOOT_EVENTS = 60
IMA_ENTRIES = 1000
EXCLUDES = ("/tmp/.*", "/var/log/.*")
NONCE = b"Vr00tAppr41salN0nce7"  # 20 alphanumerics, as keylime's verifier makes them
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KERNEL = "5.14.0-503.11.1.el9_5.x86_64"
CMDLINE = (f"(hd0,gpt2)/vmlinuz-{KERNEL} root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M,4G-64G:256M "
           "resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap console=ttyS0,115200n8 "
           "ima_policy=tcb ima_template=ima-ng ima_hash=sha256")  # fmt: skip

# UEFI GUIDs (UEFI 2.10 section 3.3 and 32.4.1; shim's SHIM_LOCK_GUID)
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
MICROSOFT_OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
REDHAT_OWNER = "3cc24e96-22c7-41d8-8863-8e39dcdcc2cf"


# -- the workload: logs ----------------------------------------------------------------------------


def _guid(text: str) -> bytes:
    a, b, c, d, e = text.split("-")
    return struct.pack("<IHH", int(a, 16), int(b, 16), int(c, 16)) + bytes.fromhex(d + e)


def _blob(label: str, size: int) -> bytes:
    """Deterministic stand-in content of a measured file or firmware volume."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _certificate(name: str) -> bytes:
    """A deterministic self-signed X.509 certificate (Ed25519 signatures are deterministic)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vroot benchmark"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.DER)


def _signature_list(kind: str, owner: str, entries: list[bytes]) -> bytes:
    """EFI_SIGNATURE_LIST (UEFI 2.10 section 32.4.1): one list of same-sized EFI_SIGNATURE_DATA."""
    size = 16 + len(entries[0])
    assert all(len(e) == len(entries[0]) for e in entries)
    body = b"".join(_guid(owner) + e for e in entries)
    return _guid(kind) + struct.pack("<III", 28 + len(body), 0, size) + body


def _device_path(*nodes: bytes) -> bytes:
    return b"".join(nodes) + b"\x7f\xff\x04\x00"  # End of Hardware Device Path


def _node(kind: int, sub: int, data: bytes) -> bytes:
    return struct.pack("<BBH", kind, sub, 4 + len(data)) + data


PCI_ROOT = _node(2, 1, struct.pack("<II", 0x0A0341D0, 0))  # ACPI PciRoot(0x0)
PCI_DISK = _node(1, 1, bytes((0, 3)))  # Pci(0x3,0x0)


def _hard_drive(partition: int, start: int, size: int) -> bytes:
    sig = hashlib.sha256(b"esp-partition-guid").digest()[:16]
    return _node(4, 1, struct.pack("<IQQ", partition, start, size) + sig + bytes((2, 2)))


def _file_path(path: str) -> bytes:
    return _node(4, 4, (path + "\x00").encode("utf-16-le"))


def _load_option(description: str, path: bytes) -> bytes:
    """EFI_LOAD_OPTION (UEFI 2.10 section 3.1.3), active."""
    return struct.pack("<IH", 1, len(path)) + (description + "\x00").encode("utf-16-le") + path


def _gpt_event() -> bytes:
    """UEFI_GPT_DATA: the GPT header, then the used partition entries (an ESP, /boot, an LVM PV)."""
    disk = hashlib.sha256(b"disk-guid").digest()[:16]
    header = b"EFI PART" + struct.pack("<IIII", 0x00010000, 92, 0x1234ABCD, 0)
    header += struct.pack("<QQQQ", 1, 41943039, 34, 41943006) + disk
    header += struct.pack("<QIII", 2, 128, 128, 0x89ABCDEF)
    parts = []
    layout = (("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", 2048, 1230847, "EFI System Partition"),
              ("0fc63daf-8483-4772-8e79-3d69d8477de4", 1230848, 3327999, ""),
              ("e6d6d379-f507-44c2-a23c-238f2a3df928", 3328000, 41940991, ""))  # fmt: skip
    for n, (kind, first, last, name) in enumerate(layout):
        unique = hashlib.sha256(b"part-%d" % n).digest()[:16]
        parts.append(_guid(kind) + unique + struct.pack("<QQQ", first, last, 0)
                     + name.encode("utf-16-le").ljust(72, b"\x00"))  # fmt: skip
    return header + struct.pack("<Q", len(parts)) + b"".join(parts)


GRUB_COMMANDS = (
    "search --no-floppy --fs-uuid --set=dev 4dbc98d4-c0f5-4c5c-9f3e-0a1b2c3d4e5f",
    "set prefix=(hd0,gpt2)/grub2",
    "export (hd0,gpt2)/grub2",
    "configfile (hd0,gpt2)/grub2/grub.cfg",
    "set pager=1",
    "[ -f (hd0,gpt2)/grub2/grubenv ]",
    "load_env -f (hd0,gpt2)/grub2/grubenv",
    "set default=c8f6a97f9de34bc6af4eaeaf59a46d52-" + KERNEL,
    "serial --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
    "set timeout_style=menu",
    "set timeout=5",
    "insmod part_gpt",
    "insmod xfs",
    "search --no-floppy --fs-uuid --set=root 4dbc98d4-c0f5-4c5c-9f3e-0a1b2c3d4e5f",
    "insmod blscfg",
    "blscfg",
    "set gfxpayload=keep",
)


def build_boot_log() -> UnverifiedTcgLog:
    """The 60-event Secure Boot log (plus its Spec ID header), PCRs 0-9, SHA-1 and SHA-256 banks."""
    log = TcgLogBuilder(banks=BANKS)
    T = EventType

    def var(
        pcr: int, kind: EventType, guid: str, name: str, data: bytes, *, measured: bytes | None = None
    ) -> None:
        log.add(pcr, kind, efi_variable_data(guid, name, data), measured=measured)

    def ipl(pcr: int, text: str, *, measured: bytes | None = None) -> None:
        # grub logs "grub_cmd: CMD" with a NUL and hashes CMD alone (PCR 8), or hashes the file it
        # names (PCR 9), as RHEL 9's grub does
        log.add(
            pcr,
            T.EV_IPL,
            ipl_string(text),
            measured=text.split(": ", 1)[1].encode() if measured is None else measured,
        )

    log.add(0, T.EV_S_CRTM_VERSION, scrtm_version("edk2-20240524-7.el9"))
    log.add(0, T.EV_EFI_PLATFORM_FIRMWARE_BLOB, platform_firmware_blob(0x820000, 0xE0000),
            measured=_blob("PEIFV", 0x20000))  # fmt: skip
    log.add(0, T.EV_EFI_PLATFORM_FIRMWARE_BLOB, platform_firmware_blob(0x900000, 0xC00000),
            measured=_blob("DXEFV", 0x40000))  # fmt: skip
    var(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    var(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "PK",
        _signature_list(EFI_CERT_X509, REDHAT_OWNER, [_certificate("Red Hat Secure Boot PK")]))  # fmt: skip
    var(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "KEK",
        _signature_list(EFI_CERT_X509, MICROSOFT_OWNER, [_certificate("Microsoft Corporation KEK CA 2011")])
        + _signature_list(EFI_CERT_X509, MICROSOFT_OWNER, [_certificate("Microsoft Corporation KEK 2K CA 2023")]))  # fmt: skip
    var(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_IMAGE_SECURITY_DATABASE, "db",
        b"".join(_signature_list(EFI_CERT_X509, MICROSOFT_OWNER, [_certificate(n)])
                 for n in ("Microsoft Windows Production PCA 2011", "Microsoft Corporation UEFI CA 2011",
                           "Windows UEFI CA 2023", "Microsoft UEFI CA 2023")))  # fmt: skip
    var(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_IMAGE_SECURITY_DATABASE, "dbx",
        _signature_list(EFI_CERT_SHA256, MICROSOFT_OWNER,
                        [hashlib.sha256(b"revoked-%d" % i).digest() for i in range(371)]))  # fmt: skip
    log.add(7, T.EV_SEPARATOR, separator())
    for i in range(2):
        log.add(1, T.EV_PLATFORM_CONFIG_FLAGS, b"ACPI DATA", measured=_blob(f"acpi-{i}", 4096))
    log.add(2, T.EV_EFI_BOOT_SERVICES_DRIVER,
            efi_image_load_event(location=0x7E9D4018, length=0x26E00,
                                 device_path=_device_path(PCI_ROOT, _node(1, 1, bytes((0, 2))))),
            measured=_blob("virtio-net-rom", 0x26E00))  # fmt: skip
    boot_path = _device_path(
        PCI_ROOT, PCI_DISK, _hard_drive(1, 2048, 1228800), _file_path("\\EFI\\redhat\\shimx64.efi")
    )
    var(1, T.EV_EFI_VARIABLE_BOOT, EFI_GLOBAL_VARIABLE, "BootOrder", struct.pack("<3H", 1, 0, 2),
        measured=struct.pack("<3H", 1, 0, 2))  # fmt: skip
    for number, label, path in ((1, "Red Hat Enterprise Linux", boot_path),
                                (0, "UiApp", _device_path(_node(4, 7, bytes(16)), _node(4, 6, bytes(16)))),
                                (2, "UEFI Misc Device", _device_path(PCI_ROOT, PCI_DISK))):  # fmt: skip
        option = _load_option(label, path)
        var(1, T.EV_EFI_VARIABLE_BOOT, EFI_GLOBAL_VARIABLE, f"Boot{number:04X}", option, measured=option)
    log.add(4, T.EV_EFI_ACTION, efi_action("Calling EFI Application from Boot Option"))
    for pcr in range(7):
        log.add(pcr, T.EV_SEPARATOR, separator())
    var(7, T.EV_EFI_VARIABLE_AUTHORITY, EFI_IMAGE_SECURITY_DATABASE, "db",
        _guid(MICROSOFT_OWNER) + _certificate("Microsoft Corporation UEFI CA 2011"))  # fmt: skip
    log.add(5, T.EV_EFI_GPT_EVENT, _gpt_event())
    log.add(4, T.EV_EFI_BOOT_SERVICES_APPLICATION,
            efi_image_load_event(location=0x7D2B5018, length=0xF0D88, device_path=boot_path),
            measured=_blob("shimx64.efi", 0xF0D88))  # fmt: skip
    var(7, T.EV_EFI_VARIABLE_AUTHORITY, SHIM_LOCK, "SbatLevel", b"sbat,1,2023012900\nshim,2\ngrub,3\n")
    var(
        7,
        T.EV_EFI_VARIABLE_AUTHORITY,
        SHIM_LOCK,
        "Shim",
        _guid(REDHAT_OWNER) + _certificate("Red Hat Secure Boot CA 5"),
    )
    grub_path = _device_path(_file_path("\\EFI\\redhat\\grubx64.efi"))
    log.add(4, T.EV_EFI_BOOT_SERVICES_APPLICATION,
            efi_image_load_event(location=0x7C0F3018, length=0x2A1E00, device_path=grub_path),
            measured=_blob("grubx64.efi", 0x2A1E00))  # fmt: skip
    ipl(9, "(hd0,gpt1)/EFI/redhat/grub.cfg", measured=_blob("esp-grub.cfg", 150))
    for command in GRUB_COMMANDS[:7]:
        ipl(8, "grub_cmd: " + command)
    ipl(9, "(hd0,gpt2)/grub2/grubenv", measured=_blob("grubenv", 1024))
    for command in GRUB_COMMANDS[7:]:
        ipl(8, "grub_cmd: " + command)
    ipl(9, f"(hd0,gpt2)/loader/entries//c8f6a97f9de34bc6af4eaeaf59a46d52-{KERNEL}.conf",
        measured=_blob("bls-entry", 400))  # fmt: skip
    ipl(8, "grub_cmd: linux " + CMDLINE)
    ipl(9, f"(hd0,gpt2)/vmlinuz-{KERNEL}", measured=_blob("vmlinuz", 0xD4A000))
    log.add(4, T.EV_EFI_BOOT_SERVICES_APPLICATION, efi_image_load_event(length=0xD4A000),
            measured=_blob("vmlinuz-authenticode", 64))  # fmt: skip
    ipl(8, "kernel_cmdline: " + CMDLINE)
    ipl(8, f"grub_cmd: initrd (hd0,gpt2)/initramfs-{KERNEL}.img")
    ipl(9, f"(hd0,gpt2)/initramfs-{KERNEL}.img", measured=_blob("initramfs", 0x100000))
    log.add(5, T.EV_EFI_ACTION, efi_action("Exit Boot Services Invocation"))
    log.add(5, T.EV_EFI_ACTION, efi_action("Exit Boot Services Returned with Success"))
    built = log.build()
    assert len(built.events) == BOOT_EVENTS + 1, len(built.events)  # + the Spec ID header
    return built


_BIN = ("bash", "ls", "cat", "grep", "sed", "awk", "sort", "uniq", "tr", "cut", "find", "xargs", "ps", "top",
        "ip", "ss", "mount", "umount", "systemctl", "journalctl", "sudo", "su", "python3.9", "perl", "ssh",
        "scp", "curl", "rpm", "dnf", "tar", "gzip", "xz", "cp", "mv", "rm", "mkdir", "chmod", "chown", "ln",
        "date", "id", "env", "sleep", "hostname", "uname", "df", "du", "free", "kill", "less", "vi")  # fmt: skip
_LIBS = ("c.so.6", "m.so.6", "pthread.so.0", "dl.so.2", "rt.so.1", "systemd.so.0", "crypto.so.3",
         "ssl.so.3", "z.so.1", "lzma.so.5", "zstd.so.1", "selinux.so.1", "pcre2-8.so.0", "cap.so.2",
         "acl.so.1", "attr.so.1", "audit.so.1", "blkid.so.1", "mount.so.1", "uuid.so.1", "gcrypt.so.20",
         "gpg-error.so.0", "krb5.so.3", "gssapi_krb5.so.2", "k5crypto.so.3", "com_err.so.2", "keyutils.so.1",
         "resolv.so.2", "nss_files.so.2", "ffi.so.8", "python3.9.so.1.0", "readline.so.8", "tinfo.so.6",
         "ncursesw.so.6", "expat.so.1", "xml2.so.2", "curl.so.4", "nghttp2.so.14", "idn2.so.0", "unistring.so.2",
         "bz2.so.1", "elf.so.1", "dw.so.1", "seccomp.so.2", "kmod.so.2", "pam.so.0", "crypt.so.2", "sqlite3.so.0",
         "dbus-1.so.3", "glib-2.0.so.0")  # fmt: skip
_UNITS = ("journald", "udevd", "logind", "networkd", "resolved", "timesyncd", "hostnamed", "localed",
          "tmpfiles", "sysctl", "modules-load", "random-seed", "fsck", "remount-fs", "user-sessions",
          "update-utmp", "machined", "coredump", "sleep", "shutdown")  # fmt: skip
_DRIVERS = ("net/virtio_net", "block/virtio_blk", "char/hw_random/virtio-rng", "gpu/drm/virtio/virtio-gpu",
            "net/net_failover", "scsi/sd_mod", "ata/ahci", "input/serio/serio_raw", "hid/hid-generic",
            "usb/host/xhci-pci")  # fmt: skip


def ima_paths(count: int) -> list[str]:
    """`count` distinct realistic paths a RHEL 9 host measures under an `ima_policy=tcb`; ten of
    them under /tmp and /var/log, which the policy's excludes skip."""
    paths = [f"/usr/bin/{b}" for b in _BIN]
    paths += [f"/usr/lib64/lib{lib}" for lib in _LIBS]
    paths += [f"/usr/lib/systemd/systemd-{u}" for u in _UNITS]
    paths += [f"/usr/lib/modules/{KERNEL}/kernel/drivers/{d}.ko.xz" for d in _DRIVERS]
    paths += [f"/etc/{name}" for name in ("ld.so.cache", "passwd", "group", "nsswitch.conf", "hosts",
                                           "resolv.conf", "localtime", "os-release", "fstab", "sudoers")]  # fmt: skip
    excluded = [
        f"/tmp/systemd-private-{hashlib.sha256(b'%d' % i).hexdigest()[:32]}/tmp/run{i}.sh" for i in range(5)
    ]
    excluded += [f"/var/log/{name}" for name in ("messages", "secure", "cron", "dnf.log", "audit/audit.log")]
    n = 0
    while len(paths) + len(excluded) < count:
        package = _BIN[n % len(_BIN)]
        paths.append(f"/usr/libexec/{package}/helper-{n:04d}" if n % 3 else
                     f"/usr/lib64/python3.9/site-packages/{package}/module_{n:04d}.cpython-39.so")  # fmt: skip
        n += 1
    paths = paths[: count - len(excluded)]
    # the excluded ones are spread through the list, as a running system measures them
    step = len(paths) // len(excluded)
    for k, path in enumerate(excluded):
        paths.insert((k + 1) * step + k, path)
    assert len(set(paths)) == count
    return paths


def boot_aggregate(boot_pcrs_sha256: dict[int, bytes]) -> bytes:
    """IMA's boot_aggregate in the SHA-256 bank (Linux 5.8 on): SHA-256 over PCRs 0-9."""
    return hashlib.sha256(b"".join(boot_pcrs_sha256[i] for i in BOOT_PCRS)).digest()


def build_ima_log(boot_pcrs_sha256: dict[int, bytes]) -> UnverifiedImaLog:
    """1,000 `ima-ng` entries with SHA-256 file digests: boot_aggregate, then 999 files."""
    entries = [ima_ng_entry("boot_aggregate", boot_aggregate(boot_pcrs_sha256), alg=HashAlg.SHA256)]
    for path in ima_paths(IMA_ENTRIES - 1):
        entries.append(ima_ng_entry(path, hashlib.sha256(_blob(path, 256)).digest(), alg=HashAlg.SHA256))
    return UnverifiedImaLog(entries=tuple(entries), format="binary")


@dataclass(frozen=True)
class Logs:
    boot: bytes  # binary_bios_measurements
    ima_ascii: bytes  # ascii_runtime_measurements
    pcrs: dict[HashAlg, dict[int, bytes]]  # what the logs replay to (PCRs 0-23, both banks)


def build_logs() -> Logs:
    """The two logs, and the PCR values they replay to."""
    boot_log = build_boot_log()
    boot = replay_tcg_log(boot_log)
    ima = build_ima_log(dict(boot[HashAlg.SHA256]))
    pcr10 = replay_ima_log(ima, banks=BANKS)
    pcrs = {alg: {**boot[alg], IMA_PCR: pcr10[alg][IMA_PCR]} for alg in BANKS}
    return Logs(boot=encode_tcg_log(boot_log), ima_ascii=encode_ima_ascii(ima), pcrs=pcrs)


def learn(logs: Logs) -> tuple[Baseline, Policy]:
    """The baseline learnt from the same logs, and the group's policy: every event of PCRs 0-9 must
    be in the baseline, the IMA allowlist is required, two excludes."""
    baseline = learn_baseline(tcg_log=parse_tcg_log(logs.boot), ima_log=parse_ima_log(logs.ima_ascii),
                              name="bench-hosts", version="1")  # fmt: skip
    policy = Policy(group="bench-hosts", event_pcrs=frozenset(BOOT_PCRS),
                    ima=ImaPolicy(require_allowlist=True, excludes=EXCLUDES))  # fmt: skip
    return baseline, policy


# -- the workload: a swtpm's quote -----------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What an agent sends for one attestation (as bytes), and the nonce the verifier issued."""

    logs: Logs
    attest: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    ak_public: bytes  # TPM2B_PUBLIC
    nonce: bytes
    quoted: dict[HashAlg, dict[int, bytes]]  # the PCR values the swtpm reported (tpm2_quote's -o file)


def quote_with_swtpm(logs: Logs, workdir: Path) -> Evidence:
    """Extend both logs into a fresh swtpm (PID-stopped), then quote SHA-256 PCRs 0-10 and 14."""
    from vroot.tm import TmClient, start_swtpm

    boot_log = parse_tcg_log(logs.boot)
    ima = parse_ima_log(logs.ima_ascii)
    proc = start_swtpm(workdir / "tm", unix_path=workdir / "tm.sock")
    try:
        with TmClient.open(proc.tcti) as tm, tm.create_primary_ek("ecc") as ek:
            for event in boot_log.measurements:
                if event.event_type != EventType.EV_NO_ACTION:
                    tm.pcr_extend(event.pcr, {alg: event.digests[alg] for alg in BANKS})
            for entry in ima.entries:
                # the kernel's per-bank template digests (ima_calc_field_array_hash)
                tm.pcr_extend(entry.pcr, {HashAlg.SHA1: entry.template_hash,
                                          HashAlg.SHA256: hashlib.sha256(entry.template_data).digest()})  # fmt: skip
            with tm.load(ek, tm.create_ak(ek, "ecc")) as ak:
                selection = {HashAlg.SHA256: QUOTED_PCRS}
                attest, signature = tm.quote(ak, selection, NONCE)
                quoted = tm.pcr_read(selection)
                return Evidence(logs=logs, attest=attest, signature=signature, ak_public=ak.public, nonce=NONCE,
                                quoted={HashAlg.SHA256: dict(quoted[HashAlg.SHA256])})  # fmt: skip
    finally:
        proc.stop()


# -- the three sides -------------------------------------------------------------------------------


def vroot_appraisal(ev: Evidence, baseline: Baseline, policy: Policy, now: datetime = NOW) -> Appraisal:
    """vroot's full appraisal of one attestation, from the bytes an agent sends (see the module
    docstring): the steps of `verify_host_evidence` that keylime also does, then `appraise`."""
    ak = parse_public(ev.ak_public)
    attest = parse_attest(ev.attest)
    if not isinstance(attest.attested, QuoteInfo):
        raise ValueError("not a quote")
    banks = tuple(attest.attested.pcr_select.to_mapping())
    boot_log = parse_tcg_log(ev.logs.boot, source="boot log")
    ima_log = parse_ima_log(ev.logs.ima_ascii, source="IMA list")
    boot = replay_tcg_log(boot_log)
    ima = replay_ima_log(ima_log, banks=banks)
    claimed = {alg: {**boot[alg], IMA_PCR: ima[alg][IMA_PCR]} for alg in banks}
    quote = verify_quote(attest, ev.signature, ak, nonce=ev.nonce, pcrs=claimed)
    verified = VerifiedHostEvidence(host_id="bench-host", quote=quote, pcrs=quote.pcrs, boot_log=boot_log,
                                    ima_log=ima_log, launches=(), ak=ak, manager=None)  # fmt: skip
    evidence = appraisal_input_from_host_evidence(verified, time=now)
    return appraise(evidence=evidence, baseline=baseline, policy=policy, now=now)


def floor_check(ev: Evidence):  # noqa: ANN201
    """The floor: one ECDSA verification with a preloaded key, plus SHA-256 of all the log bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from vroot.tpm2 import parse_signature

    key = parse_public(ev.ak_public).public_key()
    der = parse_signature(ev.signature).to_der()
    attest, boot, ima = ev.attest, ev.logs.boot, ev.logs.ima_ascii
    algorithm = ec.ECDSA(hashes.SHA256())

    def once() -> None:
        key.verify(der, attest, algorithm)
        h = hashlib.sha256(boot)
        h.update(ima)
        h.digest()

    return once


def keylime_files(ev: Evidence, workdir: Path) -> dict[str, Path]:
    """The evidence as keylime's verifier receives it, one file each, and a verifier config."""
    from vroot.tpm2 import encode_tpm2_tools_pcrs

    files = {
        "ak": ev.ak_public,
        "attest": ev.attest,
        "sig": ev.signature,
        "pcrs": encode_tpm2_tools_pcrs(ev.quoted),
        "boot": ev.logs.boot,
        "ima": ev.logs.ima_ascii,
        "excludes": "\n".join(EXCLUDES).encode() + b"\n",
        "verifier.conf": KEYLIME_VERIFIER_CONF.encode(),
        "logging.conf": KEYLIME_LOGGING_CONF.encode(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = workdir / f"kl-{name}"
        paths[name].write_bytes(data)
    return paths


# keylime reads its settings from [verifier] of the file KEYLIME_VERIFIER_CONFIG names; these are the
# ones check_quote reads: keylime 7.14.3's defaults, but the reference-state policy (`example`, the one
# keylime ships) and measured_boot_evaluate = always (the default "once" evaluates too, for count=0).
KEYLIME_VERIFIER_CONF = """\
[verifier]
version = 2.5
measured_boot_policy_name = example
measured_boot_imports = []
measured_boot_evaluate = always
ignore_tomtou_errors = False
"""
KEYLIME_LOGGING_CONF = """\
[logging]
version = 2.0
[loggers]
keys = root,keylime
[handlers]
keys = null
[formatters]
keys = plain
[formatter_plain]
format = %(message)s
[logger_root]
level = CRITICAL
handlers = null
[handler_null]
class = NullHandler
level = CRITICAL
formatter = plain
args = ()
[logger_keylime]
level = CRITICAL
qualname = keylime
handlers =
"""


def run_keylime(ev: Evidence, workdir: Path, repeat: int, *, selfcheck: bool = True) -> dict:
    """Run keylime's side in its venv; returns its JSON report (medians in seconds), or
    {"error": ...} saying why it could not run."""
    python = KEYLIME_VENV / "bin" / "python"
    if not python.exists():
        return {"error": f"{python} missing: run `make {KEYLIME_VENV.relative_to(ROOT)}/bin/python`"}
    paths = keylime_files(ev, workdir)
    env = dict(os.environ)
    env.update(
        KEYLIME_VERIFIER_CONFIG=str(paths["verifier.conf"]), KEYLIME_LOGGING_CONFIG=str(paths["logging.conf"])
    )
    argv = [str(python), str(HERE / "keylime_appraise.py"), *(str(paths[k]) for k in ("ak", "attest", "sig", "pcrs", "boot", "ima", "excludes")),
            ev.nonce.decode(), str(repeat)]  # fmt: skip
    if selfcheck:
        argv.append("--selfcheck")
    out = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, env=env)
    lines = out.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"keylime side exited {out.returncode}: {out.stderr.strip()[-2000:]}"}
    if out.returncode != 0 and "error" not in report:
        report["error"] = f"keylime side exited {out.returncode}"
    return report


# -- profile and report ----------------------------------------------------------------------------


def cpu_per_call(fn, calls: int) -> float:  # noqa: ANN001
    """CPU seconds (user + system) per call of `fn`, over `calls` calls."""
    before = os.times()
    for _ in range(calls):
        fn()
    after = os.times()
    return (after.user - before.user + after.system - before.system) / calls


def vroot_stages(ev: Evidence, baseline: Baseline, policy: Policy, repeat: int) -> dict[str, float]:
    """Each step of `vroot_appraisal` timed alone (medians), without a profiler's distortion."""
    from vroot.baseline import AppraisalInput, ImaAppraisalState, appraise_ima_delta
    from vroot.eventlog import encode_ima_binary

    sha256 = (HashAlg.SHA256,)
    ak = parse_public(ev.ak_public)
    attest = parse_attest(ev.attest)
    boot_log = parse_tcg_log(ev.logs.boot)
    ima_log = parse_ima_log(ev.logs.ima_ascii)
    binary = encode_ima_binary(ima_log)
    boot = replay_tcg_log(boot_log)
    claimed = {
        HashAlg.SHA256: {
            **boot[HashAlg.SHA256],
            IMA_PCR: replay_ima_log(ima_log, banks=sha256)[HashAlg.SHA256][IMA_PCR],
        }
    }
    quote = verify_quote(attest, ev.signature, ak, nonce=ev.nonce, pcrs=claimed)
    verified = VerifiedHostEvidence(host_id="bench-host", quote=quote, pcrs=quote.pcrs, boot_log=boot_log,
                                    ima_log=ima_log, launches=(), ak=ak, manager=None)  # fmt: skip
    evidence = appraisal_input_from_host_evidence(verified, time=NOW)
    no_ima = Policy(group=policy.group, event_pcrs=policy.event_pcrs)
    template_data = [entry.template_data for entry in ima_log.entries]
    steps = {
        "`parse_public` (AK)": lambda: parse_public(ev.ak_public),
        "`parse_attest`": lambda: parse_attest(ev.attest),
        "`parse_tcg_log` (60 events)": lambda: parse_tcg_log(ev.logs.boot),
        "`replay_tcg_log` (both banks)": lambda: replay_tcg_log(boot_log),
        "`parse_ima_log` (1,000 lines, ASCII)": lambda: parse_ima_log(ev.logs.ima_ascii),
        # a fresh log each time: a parsed log keeps its replay, so replaying it again costs nothing
        "`replay_ima_log` (SHA-256)": lambda: replay_ima_log(
            UnverifiedImaLog(entries=ima_log.entries, format=ima_log.format), banks=sha256
        ),
        "`verify_quote`": lambda: verify_quote(attest, ev.signature, ak, nonce=ev.nonce, pcrs=claimed),
        "`appraisal_input_from_host_evidence`": lambda: appraisal_input_from_host_evidence(verified, time=NOW),
        "`appraise` (all of it)": lambda: appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW),
        "… of which boot events (`appraise` without IMA)": lambda: appraise(
            evidence=evidence, baseline=baseline, policy=no_ima, now=NOW),
        "… of which `appraise_ima_delta` (replay against quoted PCR 10 + judge 1,000 entries)": lambda: appraise_ima_delta(
            ImaAppraisalState.initial(banks=sha256), evidence.ima_entries, baseline=baseline, policy=policy,
            quoted=evidence.pcrs, boot_pcrs=evidence.pcrs),
        "for comparison, not in vroot's figure: `parse_ima_log` of the same list in binary form": lambda: parse_ima_log(binary),
        "for comparison: `AppraisalInput(...)` alone": lambda: AppraisalInput(
            pcrs=evidence.pcrs, events=evidence.events, ima_entries=evidence.ima_entries, time=NOW),
        "for comparison: the hashing any IMA replay needs, in a bare Python loop (per entry: SHA-1 "
        "template hash check, SHA-256 template digest, PCR extend)": lambda: _replay_hashing(template_data),
    }  # fmt: skip
    return {name: median_call(fn, repeat=repeat) for name, fn in steps.items()}


def _replay_hashing(template_data: list[bytes]) -> bytes:
    sha1, sha256 = hashlib.sha1, hashlib.sha256
    pcr = bytes(32)
    for data in template_data:
        sha1(data).digest()
        pcr = sha256(pcr + sha256(data).digest()).digest()
    return pcr


def profile_vroot(ev: Evidence, baseline: Baseline, policy: Policy, rounds: int = 100, top: int = 20) -> str:
    """cProfile of vroot's side: the functions with the most own time, per attestation."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        vroot_appraisal(ev, baseline, policy)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.replace(str(ROOT / "src") + "/", "")
        if "/lib/python3." in short:
            short = "<stdlib>/" + short.rsplit("/", 1)[-1]
        rows.append((tottime, cumtime, ncalls, f"{short}:{line}({name})"))
    rows.sort(reverse=True)
    out = [f"cProfile, {rounds} attestations; µs per attestation. The profiler charges every call, so code "
           f"made of many small calls looks slower here than it runs (total under the profiler: "
           f"{stats.total_tt / rounds * 1e6:,.0f} µs).", "",  # type: ignore[attr-defined]
           "| own µs | cumulative µs | calls | function |", "|---:|---:|---:|---|"]  # fmt: skip
    for tottime, cumtime, ncalls, where in rows[:top]:
        out.append(
            f"| {tottime / rounds * 1e6:,.0f} | {cumtime / rounds * 1e6:,.0f} | {ncalls // rounds:,} | `{where}` |"
        )
    return "\n".join(out)


def render(
    rows: dict, cpu: dict, keylime: dict, workload: dict, stages: dict | None, profile: str | None
) -> str:
    vroot_t, floor_t = rows["vroot"], rows["floor"]
    kl_t = keylime.get("full")
    out = [
        f"# vroot appraisal benchmark ({platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()})",
        "",
        f"One attestation: ECC P-256 quote (swtpm) of SHA-256 PCRs {', '.join(map(str, QUOTED_PCRS))}; "
        f"{workload['boot_events']}-event boot log ({workload['boot_bytes']:,} bytes, SHA-1 + SHA-256 banks); "
        f"{workload['ima_entries']:,} IMA ima-ng entries ({workload['ima_bytes']:,} bytes, ASCII); "
        f"baseline of {workload['reference_values']} reference values and {workload['allowlist_paths']:,} IMA paths, "
        f"{len(EXCLUDES)} excludes. Both sides appraise it as trusted (checked before timing).",
        "",
        "| side | median per attestation | CPU per attestation | attestations/s per core |",
        "|---|---:|---:|---:|",
        f"| vroot: verify + replay + appraise | {fmt(vroot_t)} | {fmt(cpu['vroot'])} | {1 / vroot_t:,.0f} |",
    ]
    if kl_t is not None:
        out.append(f"| keylime 7.14.3: `Tpm.check_quote` (quote, measured boot, IMA) | {fmt(kl_t)} | "
                   f"{fmt(keylime['full_cpu'])} | {1 / kl_t:,.0f} |")  # fmt: skip
    else:
        out.append(f"| keylime 7.14.3 | not run: {keylime.get('error')} | | |")
    out.append(f"| floor: 1 ECDSA P-256 verify + SHA-256 of the log bytes | {fmt(floor_t)} | {fmt(cpu['floor'])} | "
               f"{1 / floor_t:,.0f} |")  # fmt: skip
    out.append("")
    if kl_t is not None:
        ok = "met" if kl_t / vroot_t >= 10 else "MISSED"
        out.append(f"- vroot/keylime throughput: **{kl_t / vroot_t:.1f}×** (goal ≥ 10×: {ok})")
    ok = "met" if vroot_t / floor_t <= 3 else "MISSED"
    out.append(f"- vroot/floor time: **{vroot_t / floor_t:.1f}×** (goal ≤ 3×: {ok})")
    out.append("- attestations/s per core = 1 / median (one thread); vroot's median is the larger of two "
               "taken before and after keylime's run.")  # fmt: skip
    if "stages" in keylime:
        out += ["", "## keylime's stages", "", "Each timed alone (medians); `check_quote` runs each once.", "",
                "| keylime stage | median |", "|---|---:|"]  # fmt: skip
        for name, t in keylime["stages"].items():
            out.append(f"| {name} | {fmt(t)} |")
        if "selfcheck" in keylime:
            out += ["", "Negative controls, each must make `check_quote` fail: "
                    + "; ".join(f"{k}: {'fails' if v else 'PASSES (not checked!)'}" for k, v in keylime["selfcheck"].items())
                    + "."]  # fmt: skip
    if stages:
        out += [
            "",
            "## vroot's steps",
            "",
            "Each timed alone (medians).",
            "",
            "| vroot step | median |",
            "|---|---:|",
        ]
        for name, t in stages.items():
            out.append(f"| {name} | {fmt(t)} |")
    if profile:
        out += ["", "## Where vroot's time goes", "", profile]
    out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument(
        "--no-profile", action="store_true", help="no step timings or cProfile of vroot's side"
    )
    args = parser.parse_args()
    repeat_vroot = 30 if args.quick else 200
    repeat_keylime = 5 if args.quick else 50
    if shutil.which("swtpm") is None:
        print("swtpm not found: run `make setup`", file=sys.stderr)
        return 1
    logs = build_logs()
    baseline, policy = learn(logs)
    with tempfile.TemporaryDirectory(prefix="vroot-appraisal-bench-") as tmp:
        workdir = Path(tmp)
        ev = quote_with_swtpm(logs, workdir)
        verdict = vroot_appraisal(ev, baseline, policy)
        if not verdict.trusted:  # must appraise as trusted before it is timed
            print(f"vroot: workload not trusted: {verdict.findings[:3]}", file=sys.stderr)
            return 1
        floor = floor_check(ev)
        floor()

        def ours() -> Appraisal:
            return vroot_appraisal(ev, baseline, policy)

        rows = {
            "vroot": median_call(ours, repeat=repeat_vroot),
            "floor": median_call(floor, repeat=repeat_vroot * 20),
        }
        cpu = {"vroot": cpu_per_call(ours, repeat_vroot), "floor": cpu_per_call(floor, repeat_vroot * 20)}
        keylime = run_keylime(ev, workdir, repeat_keylime)
        rows["vroot"] = max(rows["vroot"], median_call(ours, repeat=repeat_vroot))
    workload = {
        "boot_events": len(parse_tcg_log(logs.boot).measurements),
        "boot_bytes": len(logs.boot),
        "ima_entries": len(parse_ima_log(logs.ima_ascii).entries),
        "ima_bytes": len(logs.ima_ascii),
        "allowlist_paths": len(baseline.ima.digests) if baseline.ima else 0,
        "reference_values": len(baseline.reference_values),
    }
    missed = rows["vroot"] / rows["floor"] > 3 or ("full" in keylime and keylime["full"] / rows["vroot"] < 10)
    stages = profile = None
    if missed and not args.no_profile:
        stages = vroot_stages(ev, baseline, policy, repeat=max(10, repeat_vroot // 4))
        profile = profile_vroot(ev, baseline, policy)
    text = render(rows, cpu, keylime, workload, stages, profile)
    print(text)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "appraisal-results.md").write_text(text)
    if "error" in keylime:
        print(f"keylime side: {keylime['error']}", file=sys.stderr)
        return 1
    unchecked = [name for name, failed in keylime.get("selfcheck", {}).items() if not failed]
    if unchecked:  # keylime must reject each negative control, or its timing measures no check
        print(f"keylime side accepted bad evidence: {', '.join(unchecked)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
