"""The vTM manager (VMM layer of ISO/IEC 27070): one TM-rooted vTM per VM.

    manager = VtmManager(config, paths, host_tm, host_keys)
    manager.create(vm_uuid)               # sealed state key, swtpm, vEK + certificate, PCR 14 launch
    manager.stop(vm_uuid); manager.start(vm_uuid)   # start refuses outside the host's trusted state

It runs inside the host agent (`vroot host run`); people and tools use `vroot vtm ...`, which talks
to the agent's local API.
"""

from vroot.vtm._record import VtmPaths, VtmRecord, parse_vm_uuid
from vroot.vtm.manager import VtmManager, VtmStatus

__all__ = ["VtmManager", "VtmPaths", "VtmRecord", "VtmStatus", "parse_vm_uuid"]
