"""TPM_ALG_ID hash algorithms (TCG Algorithm Registry) and their digest sizes.

Pure: knows only the numbers of the registry and how to hash with `hashlib`. SM3_256 is listed so
that logs with an SM3 bank parse; hashing with it needs an OpenSSL that has SM3 (`HashAlg.new`
raises `InvalidInput` when it does not).
"""

from __future__ import annotations

import enum
import hashlib

from vroot.errors import InvalidInput

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs CLI start-up time
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


class HashAlg(enum.IntEnum):
    """A hash algorithm by its TPM_ALG_ID."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029

    @property
    def digest_size(self) -> int:
        return _SIZES[self]

    @property
    def bank(self) -> str:
        """The name tools use for the PCR bank: sha1, sha256, sm3_256..."""
        return self.name.lower()

    @classmethod
    def from_bank(cls, name: str) -> HashAlg:
        """Parse a bank name (`sha256`, `SHA-256`, `sm3_256`); InvalidInput if unknown."""
        key = name.strip().lower().replace("-", "")
        for alg in cls:
            if alg.bank.replace("_", "") == key.replace("_", ""):
                return alg
        raise InvalidInput(f"unknown hash algorithm {name!r}")

    @classmethod
    def from_id(cls, alg_id: int) -> HashAlg:
        try:
            return cls(alg_id)
        except ValueError:
            raise InvalidInput(f"unknown hash algorithm id 0x{alg_id:04x}") from None

    def new(self, data: bytes = b"") -> Any:
        """A hashlib object for this algorithm."""
        try:
            return hashlib.new(_HASHLIB[self], data)
        except ValueError:
            raise InvalidInput(f"hash algorithm {self.bank} is not available in this OpenSSL") from None

    def digest(self, data: bytes) -> bytes:
        return self.new(data).digest()


_SIZES = {
    HashAlg.SHA1: 20,
    HashAlg.SHA256: 32,
    HashAlg.SHA384: 48,
    HashAlg.SHA512: 64,
    HashAlg.SM3_256: 32,
    HashAlg.SHA3_256: 32,
    HashAlg.SHA3_384: 48,
    HashAlg.SHA3_512: 64,
}
_HASHLIB = {
    HashAlg.SHA1: "sha1",
    HashAlg.SHA256: "sha256",
    HashAlg.SHA384: "sha384",
    HashAlg.SHA512: "sha512",
    HashAlg.SM3_256: "sm3",
    HashAlg.SHA3_256: "sha3_256",
    HashAlg.SHA3_384: "sha3_384",
    HashAlg.SHA3_512: "sha3_512",
}
