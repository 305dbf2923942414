"""IMA template fields: the kernel's layouts (security/integrity/ima/ima_template_lib.c).

A template is a list of fields. In the binary list and in the hashed template data each field of
a non-`ima` template is `u32 LE length || bytes`; in the ASCII list each field is shown after one
space: a digest-with-algorithm field as `alg:hex`, a string field as text (spaces were replaced by
`_` when measured, and the terminating NUL is not shown), a hex field as lowercase hex, an empty
field as nothing at all.
"""

from __future__ import annotations

from vroot.errors import EventLogError
from vroot.tpm2 import HashAlg

# hash_algo_name[] of crypto/hash_info.c -> digest size; "sm3_256" as keylime writes it.
IMA_HASH_SIZES: dict[str, int] = {
    "md4": 16, "md5": 16, "sha1": 20, "rmd160": 20, "sha256": 32, "sha384": 48, "sha512": 64,
    "sha224": 28, "rmd128": 16, "rmd256": 32, "rmd320": 40, "wp256": 32, "wp384": 48, "wp512": 64,
    "tgr128": 16, "tgr160": 20, "tgr192": 24, "sm3": 32, "sm3-256": 32, "sm3_256": 32,
    "streebog256": 32, "streebog512": 64, "sha3-224": 28, "sha3-256": 32, "sha3-384": 48, "sha3-512": 64,
}  # fmt: skip
IMA_HASH_ALGS: dict[str, HashAlg] = {
    "sha1": HashAlg.SHA1, "sha256": HashAlg.SHA256, "sha384": HashAlg.SHA384, "sha512": HashAlg.SHA512,
    "sm3": HashAlg.SM3_256, "sm3-256": HashAlg.SM3_256, "sm3_256": HashAlg.SM3_256,
    "sha3-256": HashAlg.SHA3_256, "sha3-384": HashAlg.SHA3_384, "sha3-512": HashAlg.SHA3_512,
}  # fmt: skip
KERNEL_HASH_NAMES: dict[HashAlg, str] = {
    HashAlg.SHA1: "sha1", HashAlg.SHA256: "sha256", HashAlg.SHA384: "sha384", HashAlg.SHA512: "sha512",
    HashAlg.SM3_256: "sm3", HashAlg.SHA3_256: "sha3-256", HashAlg.SHA3_384: "sha3-384",
    HashAlg.SHA3_512: "sha3-512",
}  # fmt: skip

DIGEST, DIGEST_ALGO, STRING, HEX = "digest", "digest-with-algo", "string", "hex"
FIELD_FORMATS: dict[str, str] = {
    "d": DIGEST,
    "n": STRING,
    "d-ng": DIGEST_ALGO,
    "n-ng": STRING,
    "sig": HEX,
    "buf": HEX,
    "d-modsig": DIGEST_ALGO,
    "modsig": HEX,
    "evmsig": HEX,
}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
}
IMA_NAME_FIELD_SIZE = 256  # the `ima` template hashes its name NUL-padded to IMA_EVENT_NAME_LEN_MAX + 1


def template_fields(name: str) -> tuple[str, ...] | None:
    """The field ids of a template: a built-in name, or a custom `d-ng|n-ng|...` format string."""
    known = TEMPLATES.get(name)
    if known is not None:
        return known
    ids = tuple(name.split("|"))
    if len(ids) > 1 and all(i in FIELD_FORMATS for i in ids):
        return ids
    return None


class FieldError(ValueError):
    """A field that does not decode; the caller adds where."""


def field_from_ascii(field_id: str, token: bytes) -> bytes:
    """The binary field data of one ASCII token."""
    fmt = FIELD_FORMATS[field_id]
    if fmt == STRING:
        if not token:
            raise FieldError(f"empty {field_id} field")
        return token + b"\x00"
    if not token:
        return b""
    if fmt == DIGEST_ALGO:
        alg, colon, hexdigest = token.rpartition(b":")
        if not colon or not alg:
            raise FieldError(f"{field_id} field {token[:40]!r} is not alg:hex")
        return alg + b":\x00" + _unhex(hexdigest, field_id)
    return _unhex(token, field_id)


def field_to_ascii(field_id: str, data: bytes) -> bytes:
    """The ASCII token of one binary field (the inverse of `field_from_ascii`)."""
    if not data:
        return b""
    fmt = FIELD_FORMATS[field_id]
    if fmt == STRING:
        return data[:-1]
    if fmt == DIGEST_ALGO:
        prefix, _, digest = data.partition(b"\x00")
        return prefix + digest.hex().encode()
    return data.hex().encode()


def _unhex(token: bytes, field_id: str) -> bytes:
    if token != token.lower():
        raise FieldError(f"{field_id} field is not lowercase hex")
    try:
        return bytes.fromhex(token.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise FieldError(f"{field_id} field is not hex: {token[:40]!r}") from None


def check_field(field_id: str, data: bytes) -> None:
    """Structural checks of one binary field (raise FieldError)."""
    fmt = FIELD_FORMATS[field_id]
    if fmt == STRING:
        if not data or data[-1] != 0 or 0 in data[:-1]:
            raise FieldError(f"{field_id} field is not one NUL-terminated string")
    elif fmt == DIGEST_ALGO and data:
        prefix, nul, _ = data.partition(b"\x00")
        if not nul or not prefix.endswith(b":") or len(prefix) < 2:
            raise FieldError(f"{field_id} field has no 'alg:' prefix")


def decode_digest(field_id: str, data: bytes, *, violation: bool) -> tuple[str, bytes]:
    """(algorithm name, digest) of a digest field; the algorithm must be one the kernel knows."""
    if FIELD_FORMATS[field_id] == DIGEST:
        alg = {20: "sha1", 16: "md5"}.get(len(data))
        if alg is None:
            raise FieldError(f"{field_id} digest of {len(data)} bytes (want 20)")
        return alg, data
    prefix, _, digest = data.partition(b"\x00")
    name = prefix[:-1].decode("ascii", "replace")
    size = IMA_HASH_SIZES.get(name)
    if size is None:
        raise FieldError(f"unknown file digest algorithm {name!r}")
    # A violation is logged with a zeroed digest whose length older kernels fixed at 20 bytes.
    if len(digest) != size and not (violation and not any(digest)):
        raise FieldError(f"{name} file digest of {len(digest)} bytes (want {size})")
    return name, digest


def fail(what: str, *, offset: int, line: int | None, source: str | None) -> EventLogError:
    return EventLogError(what if line is None else f"line {line}: {what}", offset=offset, source=source)
