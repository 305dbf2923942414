"""The host's vTM launch log: the PCR 14 events of one host TM boot, kept on disk.

The records are kept as JSON lines (`logs/vtm-launch.jsonl`) and the crypto-agile TCG log
(`logs/vtm-launch.log`, separate from the firmware log, which on a real host belongs to the
kernel) is rebuilt from them on every append; both start empty when the host TM restarts (PCR 14
resets with it). The event format is `vroot.measure`'s (`VtmLaunch`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from vroot._fs import atomic_write
from vroot.errors import InvalidInput
from vroot.eventlog import EventType, TcgLogBuilder, encode_tcg_log
from vroot.measure._launch import LAUNCH_PCR, VtmLaunch, launch_event_data
from vroot.tpm2 import HashAlg

__all__ = ["LaunchLog"]


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
                out.append(VtmLaunch.from_json(json.loads(line)))
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
