"""The TM-resident keys of guest data protection, at fixed persistent handles of the owner hierarchy.

- `SRK_HANDLE` (0x81000001, the TCG SRK handle): the storage root key sealed data is created under
  (DP-2). ECC P-256, exactly what `tpm2_createprimary -C o -G ecc` makes (tpm2-tools default
  attributes), so a guest's own tools derive the same key and find it where they look for it.
- `BINDING_KEY_HANDLE` (0x81000002): the unrestricted ECC P-256 decryption key data is bound to
  (DP-1), `TmClient.create_decryption_primary`.

Dictionary-attack protection: the binding key is noDA (its authValue is empty, DA would guard
nothing). The SRK keeps tpm2-tools' attributes, without noDA, so that it is the key the guest's
tools make; hence every unorderly TM shutdown after the SRK was used counts as a DA failure, and
after maxTries of them (3 on swtpm) the TM refuses the SRK (TPM_RC_LOCKOUT) until the lockout
decays: whoever stops a TM must send TPM2_Shutdown first. Failed PolicyPCR unseals do not count.

Both are primaries: derived from the owner seed and a fixed template, so the key is the same every
time it is made, until the owner hierarchy is cleared. `persistent_key` opens the key at its handle,
or derives it and persists it when the handle is empty. With `want` (a check of the key the caller
needs, e.g. the SRK a blob was sealed under) nothing is persisted unless the derived key passes it:
trying a blob of another TM leaves that TM as it was.

A key already at a handle must have the role's type and attributes (ECC P-256, fixedTPM,
fixedParent, userWithAuth (used with the empty password), decrypt, restricted for the SRK only),
else `Conflict`: vroot never uses a key someone else
put there for another purpose. fixedTPM on a persistent owner object means this TPM made it (Import
refuses fixedTPM; externally loaded objects cannot be persisted in the owner hierarchy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vroot.errors import Conflict, InvalidInput, TmError
from vroot.tpm2 import EccCurve, HashAlg, ObjectAttributes, ObjectType, PublicArea, parse_public

if TYPE_CHECKING:
    from vroot.tm.client import TmClient, TmObject

SRK_HANDLE = 0x81000001
BINDING_KEY_HANDLE = 0x81000002

A = ObjectAttributes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRole:
    """What a persistent key of data protection is, and how to make it."""

    what: str
    handle: int
    required: ObjectAttributes
    forbidden: ObjectAttributes
    create: Callable[[TmClient], TmObject]

    def check(self, public: bytes) -> PublicArea:
        """The key's public area, if the key can play this role; else `Conflict`."""
        where = f"persistent handle 0x{self.handle:08x}"
        try:
            area = parse_public(public)
        except InvalidInput as exc:
            raise Conflict(f"{where}: public area does not decode ({exc})") from None
        attrs = int(area.object_attributes)
        problems = []
        if area.type is not ObjectType.ECC or area.curve != EccCurve.NIST_P256:
            problems.append(f"a {area.type.name} key, not ECC P-256")
        if area.name_alg is not HashAlg.SHA256:
            problems.append("nameAlg is not SHA-256")
        missing = A(int(self.required) & ~attrs)
        if missing:
            problems.append(f"attributes lack {missing!r}")
        extra = A(int(self.forbidden) & attrs)
        if extra:
            problems.append(f"attributes include {extra!r}")
        if problems:
            raise Conflict(
                f"{where} holds a key that is not vroot's {self.what}: {'; '.join(problems)}. "
                "vroot will not use it; evict it (tpm2_evictcontrol) if it is not needed"
            )
        return area


SRK = KeyRole(
    what="storage root key (ECC P-256, restricted decryption)",
    handle=SRK_HANDLE,
    required=A.FIXEDTPM | A.FIXEDPARENT | A.USERWITHAUTH | A.RESTRICTED | A.DECRYPT,
    forbidden=A.SIGN_ENCRYPT,
    create=lambda tm: tm.create_srk("ecc"),
)

BINDING_KEY = KeyRole(
    what="binding key (ECC P-256, unrestricted ECDH decryption)",
    handle=BINDING_KEY_HANDLE,
    required=A.FIXEDTPM | A.FIXEDPARENT | A.DECRYPT | A.USERWITHAUTH,
    forbidden=A.RESTRICTED | A.SIGN_ENCRYPT,
    create=lambda tm: tm.create_decryption_primary(),
)


def persistent_key(
    tm: TmClient, role: KeyRole, *, want: Callable[[TmObject], None] | None = None
) -> TmObject:
    """The key of `role` at its persistent handle, made and persisted if the handle is empty.

    `want(key)` raises if the key is not the one the caller needs; then nothing is persisted.
    The returned object is persistent: closing it (or leaving its `with`) only forgets it.
    Uses one transient slot while deriving the key, none afterwards.
    """
    if role.handle in tm.persistent_handles():
        return _open(tm, role, want)
    with role.create(tm) as fresh:
        role.check(fresh.public)
        if want is not None:
            want(fresh)
        try:
            return tm.persist(fresh, role.handle)
        except TmError:
            # Another client persisted the same handle meanwhile: use that one (it is checked again).
            if role.handle not in tm.persistent_handles():
                raise
    return _open(tm, role, want)


def _open(tm: TmClient, role: KeyRole, want: Callable[[TmObject], None] | None) -> TmObject:
    key = tm.persistent(role.handle)
    try:
        role.check(key.public)
        if want is not None:
            want(key)
    except BaseException:
        key.close()
        raise
    return key


def key_id(public: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of a key's public area (TPM2B_PUBLIC)."""
    return hashlib.sha256(spki_der(public)).digest()


def spki_der(public: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = parse_public(public).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tm_refused(exc: TmError) -> bool:
    """Whether the TPM itself refused a parameter or handle (a format-one TPM_RC: integrity, size,
    attributes, value, ECC point...), as it does for an altered object or ciphertext. Warnings,
    resource shortages and errors of the TSS layers are not refusals."""
    rc = exc.rc
    return rc is not None and not rc >> 16 and bool(rc & 0x80)
