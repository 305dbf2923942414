"""TCG PC Client and Linux IMA measurement logs: parse, replay, prove, write (DESIGN.md section 2).

    from vroot.eventlog import parse_tcg_log, replay_tcg_log, verify_replay

    log = parse_tcg_log(open("binary_bios_measurements", "rb").read(), source="bios log")
    pcrs = replay_tcg_log(log)                       # ReplayedPcrs: pcrs[HashAlg.SHA256][0] -> bytes
    proven = verify_replay(log, claimed=quoted_pcrs)  # ReplayedLog, or raises ReplayMismatch
    for event in proven.events:
        print(event.pcr, describe_event(event).summary)

    ima = parse_ima_log(open("ascii_runtime_measurements", "rb").read())
    pcr10 = replay_ima_log(ima)[HashAlg.SHA256][10]

Trust: `parse_*` return `Unverified*` values: nothing in them is proven. `verify_replay` proves
that the returned events hash-chain to the claimed PCR values; it does not prove those values came
from a TPM (pass only the PCRs of a verified quote), and most event data is not what its digest
covers, so callers must check data they rely on. IMA lists are replayed with `replay_ima_log` and
compared with quoted PCR 10 by the caller.

Bounds: every parser raises only `EventLogError` (with a byte offset, and a line number for ASCII
IMA) on bad input, never another exception, hang or unbounded allocation. Caps:

- TCG log: at most 16 MiB (`MAX_TCG_LOG_SIZE`), 100,000 events (`MAX_TCG_EVENTS`), 1 MiB of data
  per event (`MAX_EVENT_DATA_SIZE`), 16 algorithms in the Spec ID event (`MAX_SPEC_ID_ALGORITHMS`),
  digests of at most 128 bytes, at most one digest per declared algorithm in an event (so the
  digest count is at most 16), PCR index at most 31 except for EV_NO_ACTION events;
- IMA list: at most 128 MiB (`MAX_IMA_LOG_SIZE`), 1,000,000 entries (`MAX_IMA_ENTRIES`), template
  names of at most 255 bytes, 1 MiB of template data per entry (`MAX_TEMPLATE_DATA`), ASCII lines of
  at most 2 MiB + 1 KiB (`MAX_ASCII_LINE`).

Writers: `encode_tcg_log` and `encode_ima_binary`/`encode_ima_ascii` reproduce their input byte for
byte; `TcgLogBuilder` and `ima_ng_entry` make new logs that tpm2_eventlog and the kernel's formats
agree with.
"""

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `vroot eventlog replay` start-up is benchmarked
if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time names load lazily
    from vroot.errors import EventLogError, ReplayMismatch
    from vroot.eventlog._build import (
        TcgLogBuilder,
        efi_action,
        efi_file_device_path,
        efi_image_load_event,
        efi_variable_data,
        hcrtm_event,
        ipl_string,
        platform_firmware_blob,
        platform_firmware_blob2,
        scrtm_version,
        separator,
        startup_locality,
    )
    from vroot.eventlog._describe import EventDescription, describe_event
    from vroot.eventlog._event_types import EventType, event_type_name
    from vroot.eventlog._ima import (
        MAX_ASCII_LINE,
        MAX_IMA_ENTRIES,
        MAX_IMA_LOG_SIZE,
        MAX_TEMPLATE_DATA,
        ImaEntry,
        UnverifiedImaLog,
        encode_ima_ascii,
        encode_ima_binary,
        ima_ng_entry,
        parse_ima_log,
        verify_template_hash,
    )
    from vroot.eventlog._ima_replay import replay_ima_log
    from vroot.eventlog._pcrs import ReplayedPcrs
    from vroot.eventlog._replay import ReplayedLog, replay_tcg_log, verify_replay
    from vroot.eventlog._tcg import (
        MAX_EVENT_DATA_SIZE,
        MAX_SPEC_ID_ALGORITHMS,
        MAX_TCG_EVENTS,
        MAX_TCG_LOG_SIZE,
        SpecId,
        TcgEvent,
        UnverifiedTcgLog,
        encode_tcg_log,
        parse_tcg_log,
    )
    from vroot.eventlog._workarounds import WORKAROUNDS, Workaround

_EXPORTS = {
    "EventDescription": "vroot.eventlog._describe",
    "EventLogError": "vroot.errors",
    "EventType": "vroot.eventlog._event_types",
    "ImaEntry": "vroot.eventlog._ima",
    "MAX_ASCII_LINE": "vroot.eventlog._ima",
    "MAX_EVENT_DATA_SIZE": "vroot.eventlog._tcg",
    "MAX_IMA_ENTRIES": "vroot.eventlog._ima",
    "MAX_IMA_LOG_SIZE": "vroot.eventlog._ima",
    "MAX_SPEC_ID_ALGORITHMS": "vroot.eventlog._tcg",
    "MAX_TCG_EVENTS": "vroot.eventlog._tcg",
    "MAX_TCG_LOG_SIZE": "vroot.eventlog._tcg",
    "MAX_TEMPLATE_DATA": "vroot.eventlog._ima",
    "ReplayMismatch": "vroot.errors",
    "ReplayedLog": "vroot.eventlog._replay",
    "ReplayedPcrs": "vroot.eventlog._pcrs",
    "SpecId": "vroot.eventlog._tcg",
    "TcgEvent": "vroot.eventlog._tcg",
    "TcgLogBuilder": "vroot.eventlog._build",
    "UnverifiedImaLog": "vroot.eventlog._ima",
    "UnverifiedTcgLog": "vroot.eventlog._tcg",
    "WORKAROUNDS": "vroot.eventlog._workarounds",
    "Workaround": "vroot.eventlog._workarounds",
    "describe_event": "vroot.eventlog._describe",
    "efi_action": "vroot.eventlog._build",
    "efi_file_device_path": "vroot.eventlog._build",
    "efi_image_load_event": "vroot.eventlog._build",
    "efi_variable_data": "vroot.eventlog._build",
    "encode_ima_ascii": "vroot.eventlog._ima",
    "encode_ima_binary": "vroot.eventlog._ima",
    "encode_tcg_log": "vroot.eventlog._tcg",
    "event_type_name": "vroot.eventlog._event_types",
    "hcrtm_event": "vroot.eventlog._build",
    "ima_ng_entry": "vroot.eventlog._ima",
    "ipl_string": "vroot.eventlog._build",
    "parse_ima_log": "vroot.eventlog._ima",
    "parse_tcg_log": "vroot.eventlog._tcg",
    "platform_firmware_blob": "vroot.eventlog._build",
    "platform_firmware_blob2": "vroot.eventlog._build",
    "replay_ima_log": "vroot.eventlog._ima_replay",
    "replay_tcg_log": "vroot.eventlog._replay",
    "scrtm_version": "vroot.eventlog._build",
    "separator": "vroot.eventlog._build",
    "startup_locality": "vroot.eventlog._build",
    "verify_replay": "vroot.eventlog._replay",
    "verify_template_hash": "vroot.eventlog._ima",
}

__all__ = [
    "MAX_ASCII_LINE",
    "MAX_EVENT_DATA_SIZE",
    "MAX_IMA_ENTRIES",
    "MAX_IMA_LOG_SIZE",
    "MAX_SPEC_ID_ALGORITHMS",
    "MAX_TCG_EVENTS",
    "MAX_TCG_LOG_SIZE",
    "MAX_TEMPLATE_DATA",
    "WORKAROUNDS",
    "EventDescription",
    "EventLogError",
    "EventType",
    "ImaEntry",
    "ReplayMismatch",
    "ReplayedLog",
    "ReplayedPcrs",
    "SpecId",
    "TcgEvent",
    "TcgLogBuilder",
    "UnverifiedImaLog",
    "UnverifiedTcgLog",
    "Workaround",
    "describe_event",
    "efi_action",
    "efi_file_device_path",
    "efi_image_load_event",
    "efi_variable_data",
    "encode_ima_ascii",
    "encode_ima_binary",
    "encode_tcg_log",
    "event_type_name",
    "hcrtm_event",
    "ima_ng_entry",
    "ipl_string",
    "parse_ima_log",
    "parse_tcg_log",
    "platform_firmware_blob",
    "platform_firmware_blob2",
    "replay_ima_log",
    "replay_tcg_log",
    "scrtm_version",
    "separator",
    "startup_locality",
    "verify_replay",
    "verify_template_hash",
]


def __getattr__(name: str) -> object:
    """Load a public name on first use: the replay path then imports only the modules it needs."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
