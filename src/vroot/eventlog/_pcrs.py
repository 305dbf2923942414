"""PCR values computed by replaying a log: bank -> PCR index -> value."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

NUM_PCRS = 24  # a PC Client TPM has PCRs 0-23
_EXTEND = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
}


def reset_value(alg: HashAlg, pcr: int) -> bytes:
    """A PCR's value after TPM2_Startup(CLEAR): all ones for PCR 17-22 (the DRTM PCRs), else zero."""
    size = alg.digest_size
    return b"\xff" * size if 17 <= pcr <= 22 else bytes(size)


def hasher(alg: HashAlg) -> Callable[[bytes], Any] | None:
    """A fast `data -> hash object` function for `alg`, or None when this OpenSSL lacks it."""
    fast = _EXTEND.get(alg)
    if fast is not None:
        return fast
    try:
        alg.new(b"")
    except InvalidInput:  # not in this OpenSSL
        return None
    return alg.new


class ReplayedPcrs(Mapping):
    """PCR values computed from a log, by bank: `pcrs[HashAlg.SHA256][7]` is 32 bytes.

    Proves: nothing by itself; these are what the log says. Compare them with quoted values
    (`verify_replay`) before trusting anything. `incomplete` names the banks the log declares but
    cannot replay (an extending event without a digest for that bank, or a hash this OpenSSL lacks).
    """

    __slots__ = ("_banks", "incomplete")

    def __init__(
        self, banks: Mapping[HashAlg, Mapping[int, bytes]], *, incomplete: tuple[HashAlg | int, ...] = ()
    ) -> None:
        frozen = {alg: MappingProxyType(dict(sorted(values.items()))) for alg, values in banks.items()}
        object.__setattr__(self, "_banks", frozen)
        object.__setattr__(self, "incomplete", tuple(incomplete))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ReplayedPcrs is frozen")

    def __getitem__(self, alg: HashAlg) -> Mapping[int, bytes]:
        return self._banks[alg]

    def __iter__(self) -> Iterator[HashAlg]:
        return iter(self._banks)

    def __len__(self) -> int:
        return len(self._banks)

    def __repr__(self) -> str:
        return f"ReplayedPcrs({ {alg.bank: {i: v.hex() for i, v in pcrs.items()} for alg, pcrs in self._banks.items()} })"

    def to_json(self) -> dict[str, dict[str, str]]:
        """The CLI's JSON shape: `{"sha256": {"0": "<lowercase hex>", ...}, ...}`."""
        return {alg.bank: {str(i): v.hex() for i, v in pcrs.items()} for alg, pcrs in self._banks.items()}
