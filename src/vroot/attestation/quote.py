"""Verify a TPM2_Quote: signature, TPM_GENERATED magic, type, nonce, PCR selection and PCR digest.

    from vroot.attestation import verify_quote
    vq = verify_quote(attest_bytes, sig_bytes, ak, nonce=nonce, pcrs={HashAlg.SHA256: {0: v0, ...}})
    vq.pcrs[HashAlg.SHA256][0]   # a PCR value the AK signed

Fails closed: each failed check raises one `QuoteError` subclass, in a fixed order, and nothing is
returned that a check did not cover.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from vroot.attestation._checks import (
    DEFAULT_ALLOWED_HASHES,
    astuple_shallow,
    check_hash,
    check_magic_and_type,
    check_restricted,
    check_signature,
    hash_new,
    read_inputs,
    signing_key,
)
from vroot.errors import InvalidInput, NonceMismatch, PcrDigestMismatch, PcrSelectionMismatch
from vroot.tpm2 import HashAlg
from vroot.tpm2._attest import QuoteInfo, attest_fields
from vroot.tpm2._constants import TPM_GENERATED_VALUE, AttestType
from vroot.tpm2._pcr_selection import PcrSelection
from vroot.tpm2._signature import fast_signature
from vroot.tpm2._wire import slot_setters


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote whose checks all passed.

    Proves: a holder of the AK's private key signed these fields; with an AK given as a PublicArea,
    that the AK is a restricted signing key, so a TPM made them. When `pcrs_verified`, `pcr_values`
    (in `selection` order) and `pcrs` (the same as {bank: {index: value}}) hold exactly the quoted
    PCRs, with the values the TPM had.
    Does not prove: that the AK belongs to a genuine TPM (check its certificate or activation), that
    the quote is fresh beyond the nonce, that the counters moved as expected, or anything about PCRs
    outside `selection`. When `pcrs_verified` is False, `pcrs` is empty and only `pcr_digest` is known.
    """

    qualified_signer: bytes
    nonce: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selection: PcrSelection
    pcr_digest: bytes
    hash_alg: HashAlg
    pcr_values: tuple[bytes, ...]
    pcrs_verified: bool

    @property
    def pcrs(self) -> dict[HashAlg, dict[int, bytes]]:
        """The verified PCR values as {bank: {index: value}} (a new dict each time); empty unless
        `pcrs_verified`."""
        out: dict[HashAlg, dict[int, bytes]] = {}
        values = iter(self.pcr_values)
        if self.pcrs_verified:
            for alg, indices in self.selection.banks:
                if indices:
                    out[alg] = {i: next(values) for i in indices}
        return out


def verify_quote(
    attest: bytes | Any,
    signature: bytes | Any,
    ak: Any,
    *,
    nonce: bytes,
    pcrs: Mapping[HashAlg, Mapping[int, bytes]] | None,
    selection: PcrSelection | None = None,
    allowed_hashes: frozenset[HashAlg] = DEFAULT_ALLOWED_HASHES,
) -> VerifiedQuote:
    """Verify a TPM2_Quote (part 3, 18.4) and return what it proves.

    `attest` is a TPMS_ATTEST or TPM2B_ATTEST (bytes) or an `UnverifiedAttest`; `signature` a
    TPMT_SIGNATURE (bytes) or `Signature`; `ak` a `PublicArea` or a `cryptography` RSA/ECC public key.
    `pcrs` are the claimed PCR values ({bank: {index: bytes}}); `selection`, when given, is the set of
    PCRs the quote must cover.

    Checks, in this order, each raising its own error:
    1. the signature's hash and every quoted bank are in `allowed_hashes` -> HashAlgorithmNotAllowed
    2. the signature verifies under `ak` with its scheme (a key/scheme mismatch too) -> SignatureInvalid
    3. an `ak` given as a PublicArea is restricted, sign, not decrypt -> KeyAttributesInvalid
    4. magic is TPM_GENERATED_VALUE (0xFF544347) -> AttestMagicInvalid
    5. type is TPM_ST_ATTEST_QUOTE (0x8018) -> AttestTypeInvalid
    6. extraData equals `nonce` (constant-time) -> NonceMismatch
    7. the quoted PCRs are exactly `selection`'s (same (bank, index) set; bank order is not
       compared), and `pcrs` has a value for every quoted PCR -> PcrSelectionMismatch
    8. pcrDigest = H(claimed values in quote order), H the signature's hash -> PcrDigestMismatch
       (a claimed value of the wrong length for its bank fails here too)

    With `pcrs=None`, steps 1-7 (less the coverage part) run and the result has `pcrs_verified=False`,
    empty `pcrs` and the quoted `pcr_digest`: the caller must then compare that digest itself.
    Caller must: issue `nonce` fresh and use it once; check the AK is trusted (an AK given as a PEM
    key cannot be checked for restricted signing here); check the counters against earlier quotes.
    Claimed values for PCRs outside the quote are ignored and not returned.
    """
    fields = sig = None
    if type(attest) is bytes and type(signature) is bytes:  # the common case, without the layers
        n = len(attest)
        if n < 2 or (attest[0] << 8 | attest[1]) != n - 2:  # not a TPM2B_ATTEST
            fields = attest_fields(attest)
            sig = fast_signature(signature)
    if fields is None or sig is None:
        msg, a, sig = read_inputs(attest, signature)
        fields = astuple_shallow(a)
    else:
        msg = attest
    magic, st, signer, extra, clock, resets, restarts, safe, fw, attested = fields
    quote = attested if type(attested) is QuoteInfo else None
    halg = sig.hash_alg
    # 1. hash algorithms
    if halg not in allowed_hashes:
        check_hash(halg, allowed_hashes, "signature hash")
    if quote is not None:
        for alg, indices in quote.pcr_select.banks:
            if indices and alg not in allowed_hashes:
                check_hash(alg, allowed_hashes, "quoted PCR bank")
    # 2. signature; 3. key attributes
    key, area = signing_key(ak)
    check_signature(key, sig, msg)
    if area is not None:
        check_restricted(area, "the AK")
    # 4. magic; 5. type
    if magic != TPM_GENERATED_VALUE or st != _QUOTE or quote is None:
        check_magic_and_type(magic, st, AttestType.QUOTE)
    # 6. nonce
    if type(nonce) is not bytes:
        nonce = _as_nonce(nonce)
    if not hmac.compare_digest(extra, nonce):
        raise NonceMismatch(
            f"extraData is {len(extra)} bytes {extra.hex() or '(empty)'}, not the {len(nonce)}-byte nonce issued"
        )
    # 7. selection
    quoted = quote.pcr_select
    if selection is not None and quoted.pairs() != selection.pairs():
        raise PcrSelectionMismatch(f"quote covers {quoted}, required {selection}")
    if pcrs is None:
        values: tuple[bytes, ...] = ()
    else:
        h = hash_new(halg)
        values = ()
        for alg, indices in quoted.banks:
            if not indices:
                continue
            claimed = pcrs.get(alg)
            if claimed is None:
                raise PcrSelectionMismatch(f"no claimed {alg.bank} values for quoted PCRs {_ranges(indices)}")
            try:
                bank = itemgetter(*indices)(claimed) if len(indices) > 1 else (claimed[indices[0]],)
            except KeyError:
                missing = [i for i in indices if i not in claimed]
                raise PcrSelectionMismatch(
                    f"no claimed value for quoted {alg.bank} PCR {_ranges(missing)}"
                ) from None
            size = _SIZES[alg]
            try:
                if set(map(len, bank)) != {size}:
                    i, v = next((i, v) for i, v in zip(indices, bank, strict=True) if len(v) != size)
                    raise PcrDigestMismatch(f"claimed {alg.bank} PCR {i} is {len(v)} bytes, want {size}")
                h.update(b"".join(bank))
            except TypeError:
                raise InvalidInput(f"claimed {alg.bank} PCR values must be bytes") from None
            values += bank
        # 8. PCR digest
        digest = h.digest()
        if not hmac.compare_digest(digest, quote.pcr_digest):
            raise PcrDigestMismatch(
                f"pcrDigest {quote.pcr_digest.hex()} is not {halg.bank} of the claimed values of "
                f"{quoted} ({digest.hex()})"
            )
    # Filled through the slot setters: the frozen __init__ costs as much as the rest of this function.
    vq = _new(VerifiedQuote)
    _s_signer(vq, signer)
    _s_nonce(vq, extra)
    _s_clock(vq, clock)
    _s_resets(vq, resets)
    _s_restarts(vq, restarts)
    _s_safe(vq, safe)
    _s_fw(vq, fw)
    _s_selection(vq, quoted)
    _s_digest(vq, quote.pcr_digest)
    _s_hash(vq, halg)
    _s_values(vq, values)
    _s_verified(vq, pcrs is not None)
    return vq


_new = object.__new__
(
    _s_signer,
    _s_nonce,
    _s_clock,
    _s_resets,
    _s_restarts,
    _s_safe,
    _s_fw,
    _s_selection,
    _s_digest,
    _s_hash,
    _s_values,
    _s_verified,
) = slot_setters(VerifiedQuote)


_QUOTE = int(AttestType.QUOTE)
_SIZES = {alg: alg.digest_size for alg in HashAlg}


def _as_nonce(nonce: Any) -> bytes:
    if isinstance(nonce, bytearray | memoryview):
        return bytes(nonce)
    raise InvalidInput(f"nonce must be bytes, not {type(nonce).__name__}")


def _ranges(indices: tuple[int, ...]) -> str:
    return ",".join(map(str, indices))
