"""vroot.tm: the TM (TPM 2.0) client over tpm2-pytss, and the swtpm supervisor.

- `vroot.tm.client`: `TmClient` (PCRs, EK/SRK/AK, quote, certify, seal/unseal, sign,
  ActivateCredential, Duplicate/Import) with `KeyBlob`, `TmObject`, `DuplicationBlob`.
- `vroot.tm.swtpm`: `start_swtpm`, `SwtpmProcess`, `SwtpmState`, `free_tcp_port`. swtpm on TCP, on a
  unix socket, or ctrl-only for QEMU (`ctrl_only=True`); `detached=True` and `SwtpmProcess.adopt`
  for vTMs that outlive the agent; `with proc.data_channel() as tcti, TmClient.open(tcti) as tm:`.
- `Tpm`: the protocol a measuring stage needs (banks, read, extend).

Only this package imports tpm2_pytss, and only `vroot.tm.client` does; the names of the client
are loaded lazily here, so `import vroot.tm` (for `Tpm` or the swtpm supervisor) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vroot.tm._policy import DUPLICATE_POLICY, PolicyCommandCode, PolicyPcr
from vroot.tm._protocol import Tpm
from vroot.tm.swtpm import SwtpmProcess, SwtpmState, free_tcp_port, start_swtpm

if TYPE_CHECKING:
    from vroot.tm.client import DuplicationBlob, KeyBlob, TmClient, TmObject, public_pem, wrap_sealed

__all__ = [
    "DUPLICATE_POLICY",
    "DuplicationBlob",
    "KeyBlob",
    "PolicyCommandCode",
    "PolicyPcr",
    "SwtpmProcess",
    "SwtpmState",
    "TmClient",
    "TmObject",
    "Tpm",
    "free_tcp_port",
    "public_pem",
    "start_swtpm",
    "wrap_sealed",
]

_CLIENT_NAMES = {"DuplicationBlob", "KeyBlob", "TmClient", "TmObject", "public_pem", "wrap_sealed"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from vroot.tm import client

        return getattr(client, name)
    raise AttributeError(f"module 'vroot.tm' has no attribute {name!r}")
