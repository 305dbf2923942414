"""vTM launches measured into host PCR 14 (VMM-F6), with a TCG log that describes them.

Each launch extends PCR 14 of every bank with the digest of a tagged event (EV_EVENT_TAG, a
TCG_PCClientTaggedEvent with vroot's tag) whose data names the VM, the swtpm binary's SHA-256,
the vTM configuration's SHA-256 and the vEK's TPM name. The digest covers the whole event data,
so a verifier can recompute every measurement from the log alone, then check the replayed PCR 14
against a quote.

The log is a crypto-agile TCG log of its own (`logs/vtm-launch.log`), separate from the firmware
log (which on a real host belongs to the kernel and is read-only). The records behind it are
kept as JSON lines (`logs/vtm-launch.jsonl`) and the log is rebuilt from them on every append;
both start empty when the host TM restarts (PCR 14 resets with it).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vroot._fs import atomic_write
from vroot.errors import EventLogError, InvalidInput
from vroot.eventlog import EventType, TcgLogBuilder, encode_tcg_log
from vroot.tpm2 import HashAlg

__all__ = [
    "LAUNCH_PCR",
    "VROOT_EVENT_TAG",
    "LaunchLog",
    "VtmLaunch",
    "launch_event_data",
    "parse_launch_event_data",
]

LAUNCH_PCR = 14
VROOT_EVENT_TAG = 0x74524F56  # "VORt" little-endian: vroot's taggedEventID
_MAX_DATA = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class VtmLaunch:
    """One vTM launch as measured: which VM, which swtpm, which configuration, which vEK."""

    vm_uuid: str
    swtpm_sha256: str
    config_sha256: str
    vek_name: str

    def to_json(self) -> dict[str, str]:
        return {
            "vm": self.vm_uuid,
            "swtpm": self.swtpm_sha256,
            "config": self.config_sha256,
            "vek": self.vek_name,
        }


def launch_event_data(launch: VtmLaunch) -> bytes:
    """TCG_PCClientTaggedEvent { taggedEventID, taggedEventDataSize, JSON } (little-endian)."""
    body = json.dumps(launch.to_json(), sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<II", VROOT_EVENT_TAG, len(body)) + body


def parse_launch_event_data(data: bytes) -> VtmLaunch:
    """Decode a launch event's data; `EventLogError` if it is not a vroot launch event."""
    if len(data) < 8 or len(data) > _MAX_DATA:
        raise EventLogError(f"launch event data of {len(data)} bytes", offset=None)
    tag, size = struct.unpack_from("<II", data)
    if tag != VROOT_EVENT_TAG or size != len(data) - 8:
        raise EventLogError("not a vroot vTM launch event (tag or size)", offset=None)
    try:
        doc = json.loads(data[8:])
        return VtmLaunch(
            vm_uuid=str(doc["vm"]),
            swtpm_sha256=str(doc["swtpm"]),
            config_sha256=str(doc["config"]),
            vek_name=str(doc["vek"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EventLogError(f"vroot launch event: {exc}", offset=None) from None


class LaunchLog:
    """The launch records of one host TM boot, persisted in `directory`."""

    def __init__(self, directory: Path, banks: Iterable[HashAlg]) -> None:
        self.directory = Path(directory)
        self.banks = tuple(banks)
        self.records_path = self.directory / "vtm-launch.jsonl"
        self.log_path = self.directory / "vtm-launch.log"

    def records(self) -> list[VtmLaunch]:
        try:
            lines = self.records_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
                out.append(VtmLaunch(vm_uuid=doc["vm"], swtpm_sha256=doc["swtpm"], config_sha256=doc["config"],
                                     vek_name=doc["vek"]))  # fmt: skip
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(f"{self.records_path}: line {n}: {exc}") from None
        return out

    def reset(self) -> None:
        """Start an empty log (the host TM restarted: PCR 14 is at its reset value again)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write([])

    def measure(self, launch: VtmLaunch) -> dict[HashAlg, bytes]:
        """Append `launch` and return the digest per bank that the caller must extend into PCR 14.

        The record is written before the caller extends, so a crash between the two leaves a log
        with one event more than the PCR holds (a verifier sees a replay mismatch, never a
        silent gap).
        """
        data = launch_event_data(launch)
        digests = {alg: alg.digest(data) for alg in self.banks}
        self._write([*self.records(), launch])
        return digests

    def encoded(self) -> bytes:
        """The TCG log of the launches so far (a valid empty log when there are none)."""
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return encode_tcg_log(TcgLogBuilder(banks=self.banks).build())

    def _write(self, records: Sequence[VtmLaunch]) -> None:
        builder = TcgLogBuilder(banks=self.banks)
        for record in records:
            builder.add(LAUNCH_PCR, EventType.EV_EVENT_TAG, launch_event_data(record))
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.records_path,
            "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records).encode(),
        )
        atomic_write(self.log_path, encode_tcg_log(builder.build()))
