"""The one file format of guest data protection: sealed (DP-2) and bound (DP-1) blobs.

Big-endian, versioned, no trailing bytes; every length is checked against a cap before it is used:

    offset 0  magic     4 bytes  b"VRDP"
           4  version   u8       1
           5  kind      u8       1 = sealed, 2 = bound
    sealed (kind 1):
           6  mode      u8       0 = the data is inside the TPM object, 1 = envelope (AES-256-GCM)
              srk_name  u16 size + bytes (≤ 66)   name of the storage root key it was sealed under
              selection u16 size + TPML_PCR_SELECTION (canonical: banks by algorithm id, 3-byte maps)
              values    one digest per selected PCR, banks and indices in selection order
              public    u16 size + TPM2B_PUBLIC  (≤ 1024)  the sealed data object
              private   u16 size + TPM2B_PRIVATE (≤ 1024)
              mode 1 only: nonce 12 bytes, ciphertext u32 size + bytes (16..MAX_DATA + 16, GCM tag last)
    bound (kind 2):
           6  scheme    u8       1 = ECDH P-256, KDFe-SHA256, AES-256-GCM
              key_id    32 bytes SHA-256 of the binding key's DER SubjectPublicKeyInfo
              ephemeral 65 bytes uncompressed SEC1 P-256 point
              nonce     12 bytes
              ciphertext u32 size + bytes (16..MAX_DATA + 16)

The envelope's associated data is every byte before the ciphertext's size field
(`associated_data()`), so the header (PCR values, SRK name, key id) cannot be changed unnoticed.

Pure: parsing proves nothing. A parsed blob is unverified until `unseal`/`unbind` has the TM open
it: the TM checks the sealed object's integrity and policy, AES-GCM checks everything else.
Errors are `BlobFormatError` (an `InvalidInput`) with the offset of the field that failed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg, PcrSelection, parse_pcr_selection

__all__ = [
    "MAGIC",
    "MAX_BLOB",
    "MAX_DATA",
    "BlobFormatError",
    "BoundBlob",
    "SealedBlob",
    "parse_blob",
    "parse_bound_blob",
    "parse_sealed_blob",
]

MAGIC = b"VRDP"
VERSION = 1
KIND_SEALED = 1
KIND_BOUND = 2
_KIND_NAMES = {KIND_SEALED: "sealed", KIND_BOUND: "bound"}
MODE_DIRECT = 0
MODE_ENVELOPE = 1
SCHEME_ECDH_P256 = 1

MAX_DATA = 1 << 20  # 1 MiB of plaintext
TAG_SIZE = 16
NONCE_SIZE = 12
KEY_ID_SIZE = 32
POINT_SIZE = 65
MAX_NAME = 66  # TPM2B_NAME digest form: nameAlg u16 + 64 bytes
MAX_SELECTION = 4 + 16 * 7  # TPML_PCR_SELECTION with 16 banks of 4-byte maps
MAX_TPM_PART = 1024
PCR_COUNT = 24
MAX_BLOB = MAX_DATA + 8192


class BlobFormatError(InvalidInput):
    """A data-protection blob that does not decode: `offset` is where the failing field starts.

    A narrow subclass (defined here, not in `vroot.errors`): `InvalidInput` has no offset, and
    `TpmStructureError` is for TPM wire structures, which this format is not.
    """

    def __init__(self, what: str, *, offset: int) -> None:
        self.what = what
        self.offset = offset
        super().__init__(f"data-protection blob, offset {offset}: {what}")


# --------------------------------------------------------------------------------------------
# values


def _check_selection(selection: PcrSelection) -> None:
    if not isinstance(selection, PcrSelection):
        raise InvalidInput(f"selection must be a PcrSelection, got {type(selection).__name__}")
    if not len(selection):
        raise InvalidInput("a sealed blob needs at least one PCR")
    for alg, indices in selection.banks:
        if not indices:
            raise InvalidInput(f"PCR selection: empty {alg.bank} bank")
        if indices[-1] >= PCR_COUNT:
            raise InvalidInput(f"PCR selection: {alg.bank} PCR {indices[-1]} out of range 0-{PCR_COUNT - 1}")
    canonical = PcrSelection(tuple(sorted(selection.banks)))
    if canonical.encode() != selection.encode():
        raise InvalidInput("PCR selection not canonical (banks by algorithm id, 3-byte bitmaps)")


def _check_bytes(
    value: object, what: str, *, size: int | None = None, minimum: int = 0, maximum: int | None = None
) -> None:
    if not isinstance(value, bytes):
        raise InvalidInput(f"{what} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidInput(f"{what} must be {size} bytes, got {len(value)}")
    if len(value) < minimum:
        raise InvalidInput(f"{what} is {len(value)} bytes, at least {minimum}")
    if maximum is not None and len(value) > maximum:
        raise InvalidInput(f"{what} is {len(value)} bytes, at most {maximum}")


def _check_ciphertext(ciphertext: object) -> None:
    _check_bytes(ciphertext, "ciphertext", minimum=TAG_SIZE, maximum=MAX_DATA + TAG_SIZE)


def plaintext(data: object, what: str) -> bytes:
    """`data` (bytes-like, 1..MAX_DATA bytes) as bytes, else `InvalidInput` ("data to {what}...")."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"data to {what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not 0 < len(data) <= MAX_DATA:
        raise InvalidInput(f"data to {what} must be 1..{MAX_DATA} bytes, got {len(data)}")
    return data


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedBlob:
    """Data sealed to PCR values under a TM's storage root key (DP-2). Not secret; not verified.

    `pcr_values` are the values the PCRs held when sealing, one per selected PCR in selection
    order; they are kept for diagnostics (which PCR changed) and checked against the sealed
    object's authPolicy before use. `public`/`private` are the marshalled TPM2B_PUBLIC and
    TPM2B_PRIVATE of the sealed data object. In envelope mode (`nonce` and `ciphertext` set) the
    object holds an AES-256-GCM key and `ciphertext` the data; otherwise the object holds the data.
    """

    srk_name: bytes
    selection: PcrSelection
    pcr_values: tuple[bytes, ...]
    public: bytes
    private: bytes
    nonce: bytes | None = None
    ciphertext: bytes | None = None

    def __post_init__(self) -> None:
        _check_bytes(self.srk_name, "SRK name", minimum=1, maximum=MAX_NAME)
        _check_selection(self.selection)
        if not isinstance(self.pcr_values, tuple) or len(self.pcr_values) != len(self.selection):
            raise InvalidInput(f"one PCR value per selected PCR: {len(self.selection)} wanted")
        for (alg, index), value in zip(self.selection, self.pcr_values, strict=True):
            _check_bytes(value, f"{alg.bank} PCR {index} value", size=alg.digest_size)
        _check_bytes(self.public, "sealed object public part", minimum=1, maximum=MAX_TPM_PART)
        _check_bytes(self.private, "sealed object private part", minimum=1, maximum=MAX_TPM_PART)
        if (self.nonce is None) != (self.ciphertext is None):
            raise InvalidInput("an envelope needs both a nonce and a ciphertext")
        if self.nonce is not None:
            _check_bytes(self.nonce, "nonce", size=NONCE_SIZE)
            _check_ciphertext(self.ciphertext)

    def __repr__(self) -> str:
        mode = "direct" if self.ciphertext is None else f"envelope, {len(self.ciphertext)} bytes"
        return f"SealedBlob({self.selection}, srk={self.srk_name.hex()[:12]}…, {mode})"

    @property
    def envelope(self) -> bool:
        return self.ciphertext is not None

    def pcr_mapping(self) -> dict[HashAlg, dict[int, bytes]]:
        """The sealed-to PCR values by bank and index."""
        out: dict[HashAlg, dict[int, bytes]] = {}
        for (alg, index), value in zip(self.selection, self.pcr_values, strict=True):
            out.setdefault(alg, {})[index] = value
        return out

    def associated_data(self) -> bytes:
        """Every byte of the encoding before the ciphertext's size: the envelope's AEAD associated data."""
        sel = self.selection.encode()
        out = [
            MAGIC,
            bytes([VERSION, KIND_SEALED, MODE_DIRECT if self.nonce is None else MODE_ENVELOPE]),
            _u16(len(self.srk_name)),
            self.srk_name,
            _u16(len(sel)),
            sel,
            *self.pcr_values,
            _u16(len(self.public)),
            self.public,
            _u16(len(self.private)),
            self.private,
        ]
        if self.nonce is not None:
            out.append(self.nonce)
        return b"".join(out)

    def encode(self) -> bytes:
        head = self.associated_data()
        if self.ciphertext is None:
            return head
        return head + struct.pack(">I", len(self.ciphertext)) + self.ciphertext

    def __bytes__(self) -> bytes:
        return self.encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundBlob:
    """Data bound to a TM's binding key (DP-1): ECDH P-256 with an ephemeral key, KDFe-SHA256,
    AES-256-GCM. Not verified: only the TM holding the key can open it, and GCM checks it."""

    key_id: bytes
    ephemeral: bytes
    nonce: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.key_id, "key id", size=KEY_ID_SIZE)
        _check_bytes(self.ephemeral, "ephemeral point", size=POINT_SIZE)
        if self.ephemeral[0] != 4:
            raise InvalidInput("ephemeral point must be uncompressed (0x04 ‖ x ‖ y)")
        _check_bytes(self.nonce, "nonce", size=NONCE_SIZE)
        _check_ciphertext(self.ciphertext)

    def __repr__(self) -> str:
        return f"BoundBlob(key={self.key_id.hex()[:12]}…, {len(self.ciphertext)} bytes)"

    def associated_data(self) -> bytes:
        """Every byte of the encoding before the ciphertext's size: the AEAD associated data."""
        return b"".join(
            [MAGIC, bytes([VERSION, KIND_BOUND, SCHEME_ECDH_P256]), self.key_id, self.ephemeral, self.nonce]
        )

    def encode(self) -> bytes:
        return self.associated_data() + struct.pack(">I", len(self.ciphertext)) + self.ciphertext

    def __bytes__(self) -> bytes:
        return self.encode()


# --------------------------------------------------------------------------------------------
# parsing


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        pos = self.pos
        if n > len(self.buf) - pos:
            raise BlobFormatError(
                f"{field}: truncated, needs {n} bytes, {len(self.buf) - pos} left", offset=pos
            )
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def sized(self, field: str, *, width: int, minimum: int = 0, maximum: int) -> bytes:
        pos = self.pos
        n = int.from_bytes(self.take(width, f"{field} size"), "big")
        if n > maximum:
            raise BlobFormatError(f"{field}: size {n} exceeds the maximum {maximum}", offset=pos)
        if n < minimum:
            raise BlobFormatError(f"{field}: size {n} is below the minimum {minimum}", offset=pos)
        return self.take(n, field)


def parse_blob(data: bytes) -> SealedBlob | BoundBlob:
    """Decode a sealed or bound blob. Bounded: caps every size, refuses trailing bytes.

    Proves nothing: the result is for `unseal`/`unbind` to open (and thereby check).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"blob must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_BLOB:
        raise BlobFormatError(f"blob of {len(data)} bytes, at most {MAX_BLOB}", offset=MAX_BLOB)
    r = _Reader(data)
    magic = r.take(4, "magic")
    if magic != MAGIC:
        raise BlobFormatError(f"magic {magic.hex()}, want {MAGIC.hex()} ({MAGIC.decode()})", offset=0)
    version = r.u8("version")
    if version != VERSION:
        raise BlobFormatError(f"version {version}, this vroot reads version {VERSION}", offset=4)
    kind = r.u8("kind")
    if kind == KIND_SEALED:
        blob: SealedBlob | BoundBlob = _parse_sealed(r)
    elif kind == KIND_BOUND:
        blob = _parse_bound(r)
    else:
        raise BlobFormatError(f"unknown kind {kind} (1 sealed, 2 bound)", offset=5)
    if r.pos != len(data):
        raise BlobFormatError(f"{len(data) - r.pos} trailing bytes", offset=r.pos)
    return blob


def _parse_sealed(r: _Reader) -> SealedBlob:
    mode = r.u8("mode")
    if mode not in (MODE_DIRECT, MODE_ENVELOPE):
        raise BlobFormatError(f"unknown sealing mode {mode} (0 direct, 1 envelope)", offset=r.pos - 1)
    srk_name = r.sized("SRK name", width=2, minimum=1, maximum=MAX_NAME)
    at = r.pos
    raw_sel = r.sized("PCR selection", width=2, maximum=MAX_SELECTION)
    try:
        selection = parse_pcr_selection(raw_sel)
    except InvalidInput as exc:
        inner = getattr(exc, "offset", None) or 0
        raise BlobFormatError(f"PCR selection: {getattr(exc, 'what', exc)}", offset=at + 2 + inner) from None
    try:
        _check_selection(selection)
    except InvalidInput as exc:
        raise BlobFormatError(str(exc), offset=at) from None
    values = []
    for alg, index in selection:
        values.append(r.take(alg.digest_size, f"{alg.bank} PCR {index} value"))
    public = r.sized("public part", width=2, minimum=1, maximum=MAX_TPM_PART)
    private = r.sized("private part", width=2, minimum=1, maximum=MAX_TPM_PART)
    nonce = ciphertext = None
    if mode == MODE_ENVELOPE:
        nonce = r.take(NONCE_SIZE, "nonce")
        ciphertext = r.sized("ciphertext", width=4, minimum=TAG_SIZE, maximum=MAX_DATA + TAG_SIZE)
    return SealedBlob(
        srk_name=srk_name,
        selection=selection,
        pcr_values=tuple(values),
        public=public,
        private=private,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def _parse_bound(r: _Reader) -> BoundBlob:
    scheme = r.u8("scheme")
    if scheme != SCHEME_ECDH_P256:
        raise BlobFormatError(f"unknown binding scheme {scheme} (1 ECDH P-256)", offset=r.pos - 1)
    key_id = r.take(KEY_ID_SIZE, "key id")
    at = r.pos
    ephemeral = r.take(POINT_SIZE, "ephemeral point")
    if ephemeral[0] != 4:
        raise BlobFormatError("ephemeral point is not uncompressed (0x04 ‖ x ‖ y)", offset=at)
    nonce = r.take(NONCE_SIZE, "nonce")
    ciphertext = r.sized("ciphertext", width=4, minimum=TAG_SIZE, maximum=MAX_DATA + TAG_SIZE)
    return BoundBlob(key_id=key_id, ephemeral=ephemeral, nonce=nonce, ciphertext=ciphertext)


def parse_sealed_blob(data: bytes) -> SealedBlob:
    """`parse_blob`, requiring a sealed blob."""
    blob = parse_blob(data)
    if not isinstance(blob, SealedBlob):
        raise BlobFormatError("a bound blob, not a sealed one (use unbind)", offset=5)
    return blob


def parse_bound_blob(data: bytes) -> BoundBlob:
    """`parse_blob`, requiring a bound blob."""
    blob = parse_blob(data)
    if not isinstance(blob, BoundBlob):
        raise BlobFormatError("a sealed blob, not a bound one (use unseal)", offset=5)
    return blob
