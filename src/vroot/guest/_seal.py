"""Sealing to (v)PCRs (DP-2): data that a TM gives back only while its PCRs hold given values.

`seal` reads the selected PCRs, computes PolicyPCR over their current values in software
(`vroot.tpm2.policy_pcr`, SHA-256 session) and creates, under the persistent SRK (0x81000001), a
keyed-hash data object with that authPolicy: fixedTPM|fixedParent and no userWithAuth, so the policy
is the only way to unseal it and the object opens only under this TM's SRK. Up to 128 bytes go
into the object itself; larger data is encrypted with a fresh AES-256-GCM key (the blob's header is
the associated data) and only the key is sealed.

`unseal` checks the blob offline first (the sealed object's attributes; its authPolicy equals
PolicyPCR over the PCR values in the header; the SRK it was sealed under is this TM's), then has
the TM load it and unseal it in a PolicyPCR session: the TM is the one that compares the PCRs.

Proves (when `unseal` returns): the data was sealed under this TM's SRK by `seal` (or by anyone who
could use that SRK), and the TM's selected PCRs hold the values in the blob's header.
Does not prove: who sealed it, or that the PCR values mean a good state; the caller chooses PCRs
whose values only a trusted state can reach.
Caller must: keep the SRK's owner hierarchy (TPM2_Clear makes every blob unopenable), and shut
the TM down orderly (TPM2_Shutdown) before stopping it, or the SRK ends in DA lockout (`_keys`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from vroot.errors import InvalidInput, TmError, TmPolicyFailed, VerificationError
from vroot.guest import _aead
from vroot.guest._blob import NONCE_SIZE, SealedBlob, parse_sealed_blob, plaintext
from vroot.guest._keys import SRK, persistent_key, tm_refused
from vroot.tm import PolicyPcr
from vroot.tpm2 import HashAlg, ObjectAttributes, ObjectType, parse_public, pcr_values_digest, policy_pcr

if TYPE_CHECKING:
    from vroot.tm.client import TmClient, TmObject

MAX_SEALED_DATA = 128  # MAX_SYM_DATA: what a TPM sealed data object holds
_POLICY_ALG = HashAlg.SHA256
A = ObjectAttributes


def seal(
    tm: TmClient,
    data: bytes,
    *,
    pcrs: Mapping[HashAlg, Iterable[int]],
    rng: Callable[[int], bytes] = os.urandom,
) -> SealedBlob:
    """Seal `data` (1 byte to 1 MiB) to the current values of `pcrs` (e.g. `{HashAlg.SHA256: [7, 16]}`).

    Creates the persistent SRK at 0x81000001 if the TM has none. `rng` gives the envelope key
    and nonce of data over 128 bytes. PCRs are read, then the object is created: an extend in
    between makes a blob that will not unseal (the error then names the PCR).
    """
    data = plaintext(data, "seal")
    selection = PolicyPcr.of(pcrs).selection
    if not len(selection):
        raise InvalidInput("seal needs at least one PCR")
    now = tm.pcr_read(selection)
    values = tuple(now[alg][index] for alg, index in selection)
    policy = policy_pcr(None, selection, pcr_values_digest(now, selection, _POLICY_ALG), alg=_POLICY_ALG)
    envelope = len(data) > MAX_SEALED_DATA
    key = _aead.draw(rng, _aead.KEY_SIZE, "envelope key") if envelope else b""
    nonce = _aead.draw(rng, NONCE_SIZE, "envelope nonce") if envelope else None
    with persistent_key(tm, SRK) as srk:
        sealed = tm.seal(srk, key if envelope else data, policy_digest=policy)
        srk_name = srk.name
    fields = dict(
        srk_name=srk_name,
        selection=selection,
        pcr_values=values,
        public=sealed.public,
        private=sealed.private,
    )
    if not envelope:
        return SealedBlob(**fields)
    head = SealedBlob(**fields, nonce=nonce, ciphertext=bytes(16))  # the ciphertext is not in the AAD
    return replace(head, ciphertext=_aead.encrypt(key, nonce, data, head.associated_data()))


def verify_sealed_object(blob: SealedBlob) -> None:
    """Offline checks of a sealed blob, before the TM sees it. Raises `VerificationError`.

    Proves: the sealed object is a fixedTPM|fixedParent data object that only a PolicyPCR session
    opens, and its authPolicy is PolicyPCR over exactly the header's selection and values (so the
    header tells the truth about what the data is sealed to). Does not prove the object is genuine:
    the TM checks that when it loads it.
    """
    try:
        area = parse_public(blob.public)
    except InvalidInput as exc:
        raise VerificationError(f"sealed object: public area does not decode ({exc})") from None
    attrs = int(area.object_attributes)
    if area.type is not ObjectType.KEYEDHASH or area.name_alg is not _POLICY_ALG:
        raise VerificationError("sealed object: not a SHA-256 keyed-hash data object")
    need = int(A.FIXEDTPM | A.FIXEDPARENT)
    if attrs & need != need or attrs & int(A.USERWITHAUTH | A.SIGN_ENCRYPT | A.DECRYPT):
        raise VerificationError(
            f"sealed object: attributes {A(attrs)!r}, want fixedTPM|fixedParent without userWithAuth"
        )
    values = blob.pcr_mapping()
    want = policy_pcr(
        None, blob.selection, pcr_values_digest(values, blob.selection, _POLICY_ALG), alg=_POLICY_ALG
    )
    if area.auth_policy != want:
        raise VerificationError(
            "sealed object: its policy is not PolicyPCR over the PCR values in the blob's header: "
            "the header or the object was altered"
        )


def unseal(tm: TmClient, blob: SealedBlob | bytes) -> bytes:
    """The data of a blob from `seal`, if this TM sealed it and its PCRs hold the sealed-to values.

    Raises `BlobFormatError` (an `InvalidInput`) for bytes that are not a sealed blob,
    `VerificationError` for a blob that was altered or sealed on another TM, and `TmPolicyFailed`
    naming the PCRs that differ when the TM's state has changed since sealing.
    """
    if not isinstance(blob, SealedBlob):
        blob = parse_sealed_blob(blob)
    verify_sealed_object(blob)

    def same_srk(srk: TmObject) -> None:
        if srk.name != blob.srk_name:
            raise VerificationError(
                f"sealed under the SRK named {blob.srk_name.hex()}, but this TM's SRK (0x{SRK.handle:08x}) "
                f"is {srk.name.hex()}: the blob was sealed on another TM (or altered, or this TM's "
                "owner hierarchy was cleared)"
            )

    from vroot.tm.client import KeyBlob  # not at import: `bind` must run where tpm2-pytss is absent

    with persistent_key(tm, SRK, want=same_srk) as srk:
        try:
            secret = tm.unseal(srk, KeyBlob(blob.private, blob.public), pcrs=blob.selection)
        except TmPolicyFailed as exc:
            raise TmPolicyFailed(_changed_message(tm, blob), rc=exc.rc) from exc
        except TmError as exc:
            if tm_refused(exc):
                raise VerificationError(
                    f"the TM refused the sealed object ({exc}): the blob was altered or not sealed here"
                ) from exc
            raise
    if not blob.envelope:
        return secret
    assert blob.nonce is not None and blob.ciphertext is not None
    return _aead.decrypt(secret, blob.nonce, blob.ciphertext, blob.associated_data(), what="sealed blob")


def _changed_message(tm: TmClient, blob: SealedBlob) -> str:
    """Which PCRs differ from the sealed-to values, by a fresh read (PCR values are not secret)."""
    head = "unseal: the TM's PCRs no longer hold the values the data was sealed to"
    try:
        now = tm.pcr_read(blob.selection)
    except TmError as exc:
        return f"{head} (PCRs {blob.selection} could not be read again: {exc})"
    changed = []
    for (alg, index), sealed in zip(blob.selection, blob.pcr_values, strict=True):
        current = now.get(alg, {}).get(index)
        if current != sealed:
            got = "unreadable" if current is None else current.hex()[:16] + "…"
            changed.append(f"{alg.bank} PCR {index} (sealed to {sealed.hex()[:16]}…, now {got})")
    if not changed:
        return f"{head}: PCRs {blob.selection} changed during the unseal, and hold them again now"
    return f"{head}: {', '.join(changed)}"
