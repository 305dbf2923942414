"""What a measuring stage needs from a TPM: banks, read, extend. `TmClient` is one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from vroot.tpm2 import HashAlg


@runtime_checkable
class Tpm(Protocol):
    """A TPM's PCRs, as `vroot.measure` uses them (a `TmClient`, or a test double)."""

    def pcr_banks(self) -> tuple[HashAlg, ...]:
        """The active PCR banks."""
        ...

    def pcr_read(
        self, selection: Mapping[HashAlg, Iterable[int]] | None = None
    ) -> dict[HashAlg, dict[int, bytes]]:
        """PCR values by bank and index (default: every active bank, PCRs 0-23)."""
        ...

    def pcr_extend(self, pcr: int, digests: Mapping[HashAlg, bytes]) -> None:
        """Extend PCR `pcr` with one digest per named bank."""
        ...
