"""Transitive trust (ISO/IEC 27070 clause 6.2) played by simulated platforms.

    from vroot.measure import HOST_CHAIN, write_images, measured_boot, verify_chain

    images = write_images(Path("host-images"), HOST_CHAIN)
    record = measured_boot(tm, HOST_CHAIN, images)          # extends the TM, returns the logs
    chain = verify_chain(HOST_CHAIN, parse_tcg_log(record.tcg_log), parse_ima_log(record.ima_log))

Each stage is a real file that is hashed (changing it changes the PCR, the log and the verdict);
each measurement extends the (v)TM's PCRs per DESIGN.md's PCR map and appends to a TCG log, or to
an IMA log for runtime files. Replaying the logs gives exactly the PCRs the TM reports.
"""

from vroot.measure._boot import BootRecord, measured_boot
from vroot.measure._chain import HOST_CHAIN, VM_CHAIN, Stage, StageKind
from vroot.measure._images import ImageDir, write_images
from vroot.measure._launch import LAUNCH_PCR, VtmLaunch, launch_event_data, parse_launch_event_data
from vroot.measure._plan import BootPlan, Measurement, plan_boot
from vroot.measure._verify import StageDifference, VerifiedChain, diff_stages, verify_chain

__all__ = [
    "HOST_CHAIN",
    "LAUNCH_PCR",
    "VM_CHAIN",
    "BootPlan",
    "BootRecord",
    "ImageDir",
    "Measurement",
    "Stage",
    "StageDifference",
    "StageKind",
    "VerifiedChain",
    "VtmLaunch",
    "diff_stages",
    "launch_event_data",
    "measured_boot",
    "parse_launch_event_data",
    "plan_boot",
    "verify_chain",
    "write_images",
]
