"""Per-package IMA digests: read checksum lists and keylime runtime policies into an `ImaReference`.

`ima_reference_from_lines(text)` reads either

- checksum lines, as `sha256sum` (or sha1sum, sha512sum...) print them: `<hex>  <path>`, `<hex> *<path>`
  (binary mode), a leading `\\` for an escaped name (`\\\\` is a backslash), or the BSD/`--tag` form
  `SHA256 (<path>) = <hex>`; blank lines and `#` comments are skipped; or
- a keylime runtime policy (JSON): `{"digests": {path: [hex, ...]}, "excludes": [regex, ...],
  "keyrings": {name: [hex]}, "ima-buf": {name: [hex]}, "meta": ..., "release": ..., "ima": ...,
  "verification-keys": ...}`. Digests of keyrings and ima-buf entries join `digests` under their
  name (vroot looks `ima-buf` entries up by name); `meta`, `release` and `ima` are accepted and not
  used; `verification-keys` are NOT imported: keys a policy accepts are set in the policy
  (`ImaPolicy.signing_keys`). keylime matches excludes from the start of a path, vroot matches
  whole paths, so write `/tmp/.*` rather than `/tmp/`.

Merge the result into a baseline with `Baseline.with_ima(reference, version=...)`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from vroot.baseline._documents import MAX_DOCUMENT_SIZE, read_model
from vroot.baseline._model import FILE_DIGEST_SIZES, ImaReference
from vroot.errors import InvalidInput

__all__ = ["ima_reference_from_lines"]

_LINE = re.compile(r"(?P<escaped>\\)?(?P<hex>[0-9a-fA-F]+) (?P<mode>[ *])(?P<path>.+)")
_TAG = re.compile(r"(?P<escaped>\\)?[A-Za-z0-9-]+ \((?P<path>.+)\) = (?P<hex>[0-9a-fA-F]+)")


class _RuntimePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    meta: dict[str, Any] = {}
    release: Any = None
    digests: dict[StrictStr, list[StrictStr]] = {}
    excludes: list[StrictStr] = []
    keyrings: dict[StrictStr, list[StrictStr]] = {}
    ima: dict[str, Any] = {}
    ima_buf: dict[StrictStr, list[StrictStr]] = Field(default={}, alias="ima-buf")
    verification_keys: Any = Field(default=None, alias="verification-keys")


def ima_reference_from_lines(text: bytes | str) -> ImaReference:
    """The allowlist in `text` (checksum lines or a keylime runtime policy, see the module docstring).
    `InvalidInput` names the first line or field that is not one of those forms."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "surrogateescape")  # IMA paths are bytes, as the kernel logs them
    if not isinstance(text, str):
        raise InvalidInput(f"IMA digest list must be text, not {type(text).__name__}")
    if len(text) > MAX_DOCUMENT_SIZE:
        raise InvalidInput(f"IMA digest list of {len(text)} characters exceeds the cap of {MAX_DOCUMENT_SIZE}")
    if text.lstrip()[:1] == "{":
        return _runtime_policy(text)
    digests: dict[str, set[bytes]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.fullmatch(line.rstrip("\r")) or _TAG.fullmatch(line.rstrip("\r"))
        if match is None:
            raise InvalidInput(f"IMA digest list line {number}: not '<hex>  <path>' or 'ALG (<path>) = <hex>'")
        path = match["path"]
        if match["escaped"]:
            path = _unescape(path, number)
        digest = _digest(match["hex"], f"line {number}")
        digests.setdefault(path, set()).add(digest)
    return ImaReference(digests={p: frozenset(d) for p, d in digests.items()})


def _unescape(path: str, number: int) -> str:
    out, i = [], 0
    while i < len(path):
        c = path[i]
        if c == "\\":
            nxt = path[i + 1 : i + 2]
            if nxt == "\\":
                out.append("\\")
            elif nxt in ("n", "r"):
                raise InvalidInput(f"IMA digest list line {number}: a path with a newline cannot be measured by IMA")
            else:
                raise InvalidInput(f"IMA digest list line {number}: unknown escape '\\{nxt}'")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _digest(value: str, where: str) -> bytes:
    if len(value) % 2 or len(value) // 2 not in FILE_DIGEST_SIZES or not re.fullmatch(r"[0-9a-fA-F]+", value):
        raise InvalidInput(f"IMA digest list {where}: {value[:40]!r} is not a file digest in hex")
    return bytes.fromhex(value)


def _runtime_policy(text: str) -> ImaReference:
    policy = read_model(text.encode("utf-8", "surrogateescape"), _RuntimePolicy, what="runtime policy")
    digests: dict[str, set[bytes]] = {}
    for section, entries in (("digests", policy.digests), ("keyrings", policy.keyrings), ("ima-buf", policy.ima_buf)):
        for path, values in entries.items():
            for value in values:
                digests.setdefault(path, set()).add(_digest(value, f"{section}.{path[:60]}"))
    return ImaReference(digests={p: frozenset(d) for p, d in digests.items() if d}, excludes=tuple(policy.excludes))
