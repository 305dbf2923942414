"""The fast path of the ASCII IMA reader: `ima-ng` and `ima-sig` lines as the kernel prints them.

Nearly every line of a real list is one of these, and the careful reader (`_ima._parse_line`,
generic over templates and fields) spends most of its time on what they all share. `fast_entry`
takes a line only when every check of the careful reader is sure to pass and its entry would be
the same, value for value; for anything else it returns None and the careful reader decides
(raising with its own message, offset and line). So a malformed line always reaches the careful
reader, and the fast path changes no result, only the time (tests/unit/test_ima_fast.py checks
both agree on random well-formed and malformed lines).

Taken here: `<pcr> <template hash> ima-ng <alg>:<digest> <path>` and the same with `ima-sig`
and a signature (or nothing) after the path; a PCR number 0-31 as `%2d` prints it (a leading
space, or none); a SHA-1 (40 hex digits) or SHA-256 (64) template hash that is the hash of the
template data; lowercase hex; a file digest algorithm the kernel knows, with a digest of its size;
a path without NUL. Not taken: violations (their all-zero template hash is no hash of the data),
other templates, other template hash lengths (SHA-384 lists, or SM3 ones when the SHA-256 check
fails), hex with upper case or whitespace (which `bytes.fromhex` skips), a hex field of digits
only (rare; `bytes.islower` needs a letter), template data over the cap.
"""

from __future__ import annotations

import hashlib
import struct
from binascii import unhexlify
from collections.abc import Callable

from vroot.eventlog._ima_fields import IMA_HASH_SIZES
from vroot.tpm2 import HashAlg

_U32 = struct.Struct("<I").pack
# template hash length in hex digits -> (hash function, its HashAlg), the first candidate of
# `_ima._TEMPLATE_HASH_ALGS` for the length
_TEMPLATE_HASHES = {40: (hashlib.sha1, HashAlg.SHA1), 64: (hashlib.sha256, HashAlg.SHA256)}
_PCRS = {str(i).encode(): i for i in range(32)}  # PCR numbers as %2d prints them (less the padding)
# file digest algorithm as printed -> (its name, digest size, the d-ng field's bytes before the digest:
# the field length and "<alg>:\0")
_DIGEST_FIELDS = {
    name.encode(): (name, size, _U32(len(name) + 2 + size) + name.encode() + b":\x00")
    for name, size in IMA_HASH_SIZES.items()
}


def fast_entry(
    line: bytes, offset: int, line_no: int, make: Callable[..., object], max_template_data: int
) -> object | None:
    """The entry of one ASCII line (no newline) when the fast path can take it, else None.
    `make` is `ImaEntry`'s positional constructor; `max_template_data` the reader's cap."""
    parts = line.split(b" ", 7)  # a complete split has at most 7 parts here (6 and a leading space)
    if not parts[0]:
        del parts[0]
    count = len(parts)
    if count == 5:
        if parts[2] != b"ima-ng":
            return None
        name = "ima-ng"
        pcr_text, hash_text, _, digest_text, path_text = parts
    elif count == 6:
        if parts[2] != b"ima-sig":
            return None
        name = "ima-sig"
        pcr_text, hash_text, _, digest_text, path_text, sig_text = parts
    else:
        return None
    template = _TEMPLATE_HASHES.get(len(hash_text))
    alg_text, _, hex_text = digest_text.partition(b":")
    known = _DIGEST_FIELDS.get(alg_text)
    if template is None or known is None or not path_text or 0 in path_text:
        return None
    pcr = _PCRS.get(pcr_text)
    if pcr is None or not (hash_text.islower() and hex_text.islower()):
        return None
    try:  # unhexlify takes only hex digits, unlike bytes.fromhex (whitespace)
        template_hash = unhexlify(hash_text)
        file_digest = unhexlify(hex_text)
        signature = None
        if count == 6:
            if sig_text and not sig_text.islower():
                return None
            signature = unhexlify(sig_text)
    except ValueError:  # binascii.Error: not hex
        return None
    digest_alg, size, prefix = known
    if len(file_digest) != size:
        return None
    data = b"".join((prefix, file_digest, _U32(len(path_text) + 1), path_text, b"\x00"))
    if signature is not None:
        data += _U32(len(signature)) + signature
    hash_function, hash_alg = template
    if len(data) > max_template_data or hash_function(data).digest() != template_hash:
        return None
    try:
        path = path_text.decode()
    except UnicodeDecodeError:
        path = path_text.decode("utf-8", "surrogateescape")
    return make(pcr, template_hash, name, data, hash_alg, digest_alg, file_digest, path, signature,
                None, None, offset, line_no)  # fmt: skip
