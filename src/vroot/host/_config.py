"""A host's configuration (`host.toml`) and the paths of its directory.

    DIR/host.toml             this configuration
    DIR/tm/                   the simulated host TM's swtpm state (simulated hosts only)
    DIR/images/               the simulated host's boot components (simulated hosts only)
    DIR/keys/                 TM-wrapped key blobs and public parts; the EK certificate
    DIR/logs/                 boot log, IMA log, vTM launch log (PCR 14)
    DIR/vtms/<vm-uuid>/       one directory per vTM (mode 0700)
    DIR/migrations/           one journal per vTM migration (`vroot.migration`), the source's blob
    DIR/agent.sock            the host agent's local API (mode 0600)

Nothing secret is stored in the clear here: key blobs are wrapped by the TM, the vTM state keys
are sealed to the host's trusted state, and vTM state is encrypted by swtpm.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vroot.errors import InvalidInput, NotFound
from vroot.tpm2 import HashAlg

__all__ = ["CONFIG_NAME", "HostConfig", "HostPaths", "load_config", "save_config"]

CONFIG_NAME = "host.toml"
DEFAULT_TRUSTED_PCRS = (0, 1, 2, 3, 4, 5, 7, 8, 9)
_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")  # fits an X.509 PrintableString (vEK issuer)

# Persistent handles in the host TM (TCG Provisioning Guidance: owner range 0x81000000-0x8100FFFF
# for storage keys, endorsement range 0x81010000-0x8101FFFF).
SRK_HANDLE = 0x81000001
EK_HANDLE = 0x81010002
AK_HANDLE = 0x81018000
MANAGER_HANDLE = 0x81000100


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """What a host is and how its TM is reached. Built once at start-up and passed down."""

    host_id: str
    mode: str  # "simulate": a swtpm under DIR/tm is the host TM; "device": a real TPM at `tcti`
    tcti: str | None = None
    ek_kind: str = "ecc"
    trusted_pcrs: tuple[int, ...] = DEFAULT_TRUSTED_PCRS
    trusted_bank: HashAlg = HashAlg.SHA256
    labels: dict[str, str] = field(default_factory=dict)
    # Each vTM's swtpm runs as its own uid, base + a slot (VMM-S1), when the agent runs as root.
    # None: every swtpm runs as the agent's user. The range must not hold real users.
    vtm_uid_base: int | None = 2_000_000
    # Device hosts: where the kernel exposes the firmware and IMA logs (None: the standard paths).
    boot_log: str | None = None
    ima_log: str | None = None

    def __post_init__(self) -> None:
        if not _HOST_ID.match(self.host_id):
            raise InvalidInput(f"host id {self.host_id!r}: use 1-63 letters, digits, '.' or '-'")
        if self.mode not in ("simulate", "device"):
            raise InvalidInput(f"host mode must be 'simulate' or 'device', not {self.mode!r}")
        if self.mode == "device" and not self.tcti:
            raise InvalidInput("a device host needs a TCTI (e.g. device:/dev/tpmrm0)")
        if self.ek_kind not in ("ecc", "rsa"):
            raise InvalidInput(f"EK kind must be ecc or rsa, not {self.ek_kind!r}")
        if not self.trusted_pcrs or any(not 0 <= p <= 23 for p in self.trusted_pcrs):
            raise InvalidInput(f"trusted PCRs must be indices 0-23, got {list(self.trusted_pcrs)}")
        if self.vtm_uid_base is not None and not 1000 <= self.vtm_uid_base <= 2**31 - 100_000:
            raise InvalidInput(f"vtm_uid_base {self.vtm_uid_base} out of range (1000 .. 2^31 - 100000)")
        if 14 in self.trusted_pcrs or 10 in self.trusted_pcrs:
            raise InvalidInput(
                "trusted PCRs may not include 10 (IMA) or 14 (vTM launches): they change at run time"
            )

    @property
    def trusted_selection(self) -> dict[HashAlg, tuple[int, ...]]:
        return {self.trusted_bank: tuple(sorted(self.trusted_pcrs))}


class HostPaths:
    """The files of a host directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    config = property(lambda self: self.root / CONFIG_NAME)
    tm_state = property(lambda self: self.root / "tm")
    tm_socket = property(lambda self: self.root / "tm" / "tm.sock")
    tm_pid = property(lambda self: self.root / "tm" / "swtpm.pid")
    images = property(lambda self: self.root / "images")
    keys = property(lambda self: self.root / "keys")
    logs = property(lambda self: self.root / "logs")
    vtms = property(lambda self: self.root / "vtms")
    agent_socket = property(lambda self: self.root / "agent.sock")
    agent_lock = property(lambda self: self.root / "agent.lock")

    def key(self, name: str) -> Path:
        return self.keys / name

    def log(self, name: str) -> Path:
        return self.logs / name

    def vtm(self, vm_uuid: str) -> Path:
        return self.vtms / vm_uuid


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def save_config(config: HostConfig, paths: HostPaths) -> None:
    """Write `host.toml` atomically."""
    lines = ["# vroot host configuration (written by `vroot host init`)", "[host]"]
    lines.append(f"id = {_toml_value(config.host_id)}")
    lines.append(f"mode = {_toml_value(config.mode)}")
    if config.tcti:
        lines.append(f"tcti = {_toml_value(config.tcti)}")
    lines.append(f"ek_kind = {_toml_value(config.ek_kind)}")
    lines.append(f"trusted_pcrs = {_toml_value(list(config.trusted_pcrs))}")
    lines.append(f"trusted_bank = {_toml_value(config.trusted_bank.bank)}")
    lines.append(
        f"vtm_uid_base = {_toml_value(config.vtm_uid_base if config.vtm_uid_base is not None else 0)}"
    )
    for key in ("boot_log", "ima_log"):
        if getattr(config, key):
            lines.append(f"{key} = {_toml_value(getattr(config, key))}")
    if config.labels:
        lines.append("")
        lines.append("[labels]")
        lines.extend(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in sorted(config.labels.items()))
    tmp = paths.config.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, paths.config)


def load_config(paths: HostPaths) -> HostConfig:
    """Read `host.toml`; `NotFound` if the directory is not a host, `InvalidInput` if it is malformed."""
    try:
        raw = tomllib.loads(paths.config.read_text())
    except FileNotFoundError:
        raise NotFound(
            f"{paths.root} is not a vroot host (no {CONFIG_NAME}; run `vroot host init`)"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{paths.config}: {exc}") from None
    host = raw.get("host")
    if not isinstance(host, dict):
        raise InvalidInput(f"{paths.config}: missing [host] table")
    known = {
        "id",
        "mode",
        "tcti",
        "ek_kind",
        "trusted_pcrs",
        "trusted_bank",
        "vtm_uid_base",
        "boot_log",
        "ima_log",
    }
    unknown = set(host) - known
    if unknown:
        raise InvalidInput(f"{paths.config}: unknown keys in [host]: {sorted(unknown)}")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidInput(f"{paths.config}: [labels] must map names to strings")
    try:
        return HostConfig(
            host_id=str(host["id"]),
            mode=str(host["mode"]),
            tcti=host.get("tcti"),
            ek_kind=str(host.get("ek_kind", "ecc")),
            trusted_pcrs=tuple(int(p) for p in host.get("trusted_pcrs", DEFAULT_TRUSTED_PCRS)),
            trusted_bank=HashAlg.from_bank(str(host.get("trusted_bank", "sha256"))),
            labels=dict(labels),
            vtm_uid_base=int(host.get("vtm_uid_base", 2_000_000)) or None,
            boot_log=host.get("boot_log"),
            ima_log=host.get("ima_log"),
        )
    except KeyError as exc:
        raise InvalidInput(f"{paths.config}: missing key {exc.args[0]!r} in [host]") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{paths.config}: {exc}") from None
