"""vTM launches as measurements (VMM-F6): the vTM manager measures each vTM it launches.

A launch extends PCR 14 with the digest of a tagged event (EV_EVENT_TAG, a
TCG_PCClientTaggedEvent with vroot's tag) whose data names the VM, the swtpm binary's SHA-256,
the vTM configuration's SHA-256 and the vEK's TPM name. The digest covers the whole event data,
so a verifier recomputes every measurement from the log alone and checks the replayed PCR 14
against a quote. The host writes these events (`vroot.host`); verifiers read them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from vroot.errors import EventLogError

__all__ = ["LAUNCH_PCR", "VROOT_EVENT_TAG", "VtmLaunch", "launch_event_data", "parse_launch_event_data"]

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

    @classmethod
    def from_json(cls, doc: dict) -> VtmLaunch:
        """From `to_json()`'s shape; KeyError/TypeError for a document of another shape."""
        return cls(vm_uuid=str(doc["vm"]), swtpm_sha256=str(doc["swtpm"]), config_sha256=str(doc["config"]),
                   vek_name=str(doc["vek"]))  # fmt: skip

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
        return VtmLaunch.from_json(json.loads(data[8:]))
    except (ValueError, KeyError, TypeError) as exc:
        raise EventLogError(f"vroot launch event: {exc}", offset=None) from None
