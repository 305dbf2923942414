"""Play a measured boot into a (v)TM: the I/O half of `vroot.measure`.

`measured_boot` reads a chain's images, plans the boot (`plan_boot`) and extends every
measurement into the TM through the `vroot.tm.Tpm` protocol (a swtpm, a vTM or a hardware TPM),
in order. It returns the logs the platform keeps; replaying them gives exactly the PCRs the TM
now holds (a test proves it against swtpm).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vroot.eventlog import encode_ima_ascii, encode_ima_binary, encode_tcg_log
from vroot.measure._chain import Stage
from vroot.measure._images import ImageDir
from vroot.measure._plan import BootPlan, plan_boot
from vroot.tpm2 import HashAlg

if TYPE_CHECKING:
    from vroot.tm import Tpm

__all__ = ["BootRecord", "measured_boot"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BootRecord:
    """What a platform keeps after booting: the plan, and its logs in their standard encodings."""

    plan: BootPlan
    tcg_log: bytes  # TCG PC Client crypto-agile log (binary_bios_measurements)
    ima_log: bytes  # IMA binary_runtime_measurements
    ima_log_ascii: bytes  # IMA ascii_runtime_measurements


def measured_boot(
    tpm: Tpm, chain: Iterable[Stage], images: ImageDir, *, banks: Iterable[HashAlg] | None = None
) -> BootRecord:
    """Boot `chain` from `images` into `tpm` (all its active banks unless `banks` is given).

    The TM's PCRs must be at their reset values (a fresh TM start); this function does not check
    that, the replay later does.
    """
    chosen = tuple(banks) if banks is not None else tuple(tpm.pcr_banks())
    plan = plan_boot(tuple(chain), images.read, banks=chosen)
    for m in plan.measurements:
        tpm.pcr_extend(m.pcr, m.digests)
    return BootRecord(
        plan=plan,
        tcg_log=encode_tcg_log(plan.tcg_log),
        ima_log=encode_ima_binary(plan.ima_log),
        ima_log_ascii=encode_ima_ascii(plan.ima_log),
    )
