"""verify_quote / verify_certify: one negative test per verification step, in the documented order.

Quotes are built in software with a `cryptography` key and the codec's writers, so every field can be
bent on purpose and then re-signed: each test breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cache

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.attestation import (
    DEFAULT_ALLOWED_HASHES,
    CertifiedNameMismatch,
    VerifiedQuote,
    verify_certify,
    verify_quote,
)
from vroot.errors import (
    AttestMagicInvalid,
    AttestTypeInvalid,
    HashAlgorithmNotAllowed,
    InvalidInput,
    KeyAttributesInvalid,
    NonceMismatch,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    SignatureInvalid,
    TpmStructureError,
    VerificationError,
)
from vroot.tpm2 import (
    TPM_GENERATED_VALUE,
    AttestType,
    CertifyInfo,
    HashAlg,
    ObjectAttributes,
    PcrSelection,
    QuoteInfo,
    SigAlg,
    Signature,
    UnverifiedAttest,
    public_area_from_key,
)

NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
SIGNER = b"\x00\x0b" + bytes(range(32))


@cache
def ecc_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def pcr_values(banks=(HashAlg.SHA256,), indices=range(17)) -> dict[HashAlg, dict[int, bytes]]:
    return {alg: {i: hashlib.new(alg.bank, bytes([i, alg])).digest() for i in indices} for alg in banks}


def digest_of(values, selection: PcrSelection, alg: HashAlg) -> bytes:
    h = hashlib.new(alg.bank)
    for bank, i in selection:
        h.update(values[bank][i])
    return h.digest()


def sign(key, message: bytes, *, sig_alg=SigAlg.ECDSA, hash_alg=HashAlg.SHA256) -> Signature:
    h = {
        HashAlg.SHA1: hashes.SHA1(),
        HashAlg.SHA256: hashes.SHA256(),
        HashAlg.SHA384: hashes.SHA384(),
        HashAlg.SHA512: hashes.SHA512(),
    }[hash_alg]
    if sig_alg is SigAlg.ECDSA:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(h)))
        size = (key.curve.key_size + 7) // 8
        return Signature(sig_alg, hash_alg, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big"))
    pad = padding.PKCS1v15() if sig_alg is SigAlg.RSASSA else padding.PSS(padding.MGF1(h), h.digest_size)
    return Signature(sig_alg, hash_alg, sig=key.sign(message, pad, h))


def make_attest(
    *,
    values=None,
    selection: PcrSelection | None = None,
    hash_alg=HashAlg.SHA256,
    nonce=NONCE,
    **changes,
) -> UnverifiedAttest:
    values = pcr_values() if values is None else values
    if selection is None:
        selection = PcrSelection.from_mapping({alg: bank.keys() for alg, bank in values.items()})
    attest = UnverifiedAttest(
        magic=TPM_GENERATED_VALUE,
        type=AttestType.QUOTE,
        qualified_signer=SIGNER,
        extra_data=nonce,
        clock=123456,
        reset_count=3,
        restart_count=1,
        safe=True,
        firmware_version=0x2016051100162800,
        attested=QuoteInfo(selection, digest_of(values, selection, hash_alg)),
    )
    return dataclasses.replace(attest, **changes)


def make_quote(*, key=None, sig_alg=SigAlg.ECDSA, hash_alg=HashAlg.SHA256, **attest_kw):
    """(attest bytes, signature bytes, AK PublicArea, claimed PCR values)."""
    key = key or ecc_key()
    values = attest_kw.pop("values", None) or pcr_values()
    attest = make_attest(values=values, hash_alg=hash_alg, **attest_kw).encode()
    area = public_area_from_key(key.public_key())
    return attest, sign(key, attest, sig_alg=sig_alg, hash_alg=hash_alg).encode(), area, values


# -- it verifies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_fn, sig_alg, hash_alg",
    [
        (ecc_key, SigAlg.ECDSA, HashAlg.SHA256),
        (ecc_key, SigAlg.ECDSA, HashAlg.SHA384),
        (rsa_key, SigAlg.RSASSA, HashAlg.SHA256),
        (rsa_key, SigAlg.RSAPSS, HashAlg.SHA256),
        (lambda: ec.generate_private_key(ec.SECP384R1()), SigAlg.ECDSA, HashAlg.SHA384),
        (lambda: ec.generate_private_key(ec.SECP521R1()), SigAlg.ECDSA, HashAlg.SHA512),
    ],
)
def test_a_good_quote_verifies_and_returns_the_signed_values(key_fn, sig_alg, hash_alg):
    key = key_fn()
    attest, sig, area, values = make_quote(key=key, sig_alg=sig_alg, hash_alg=hash_alg)
    for ak in (area, key.public_key()):
        vq = verify_quote(attest, sig, ak, nonce=NONCE, pcrs=values)
        assert isinstance(vq, VerifiedQuote)
        assert vq.pcrs_verified and vq.pcrs == values
        assert vq.pcr_values == tuple(values[HashAlg.SHA256][i] for i in range(17))
        assert (vq.nonce, vq.clock, vq.reset_count, vq.restart_count) == (NONCE, 123456, 3, 1)
        assert vq.qualified_signer == SIGNER and vq.hash_alg is hash_alg


def test_parsed_objects_and_tpm2b_attest_are_accepted():
    attest, sig, area, values = make_quote()
    from vroot.tpm2 import parse_attest, parse_signature

    vq = verify_quote(parse_attest(attest), parse_signature(sig), area, nonce=NONCE, pcrs=values)
    assert vq.pcrs_verified
    sized = len(attest).to_bytes(2, "big") + attest
    assert verify_quote(sized, sig, area, nonce=NONCE, pcrs=values).pcrs_verified


def test_extra_claimed_values_are_ignored_and_not_returned():
    attest, sig, area, values = make_quote(values=pcr_values(indices=[0, 7]))
    claimed = pcr_values(banks=(HashAlg.SHA256, HashAlg.SHA1), indices=range(24))
    vq = verify_quote(attest, sig, area, nonce=NONCE, pcrs=claimed)
    assert vq.pcrs == {HashAlg.SHA256: {0: claimed[HashAlg.SHA256][0], 7: claimed[HashAlg.SHA256][7]}}


def test_without_pcrs_everything_else_is_checked_and_pcrs_are_not_verified():
    attest, sig, area, values = make_quote()
    vq = verify_quote(attest, sig, area, nonce=NONCE, pcrs=None)
    assert not vq.pcrs_verified and vq.pcrs == {} and vq.pcr_values == ()
    assert vq.pcr_digest == digest_of(values, vq.selection, HashAlg.SHA256)
    with pytest.raises(NonceMismatch):
        verify_quote(attest, sig, area, nonce=b"other", pcrs=None)


def test_selection_equal_as_a_set_of_pcrs_verifies():
    values = pcr_values(banks=(HashAlg.SHA256, HashAlg.SHA384), indices=[0, 1, 7])
    attest, sig, area, _ = make_quote(values=values)
    required = PcrSelection.from_mapping({HashAlg.SHA384: [7, 1, 0], HashAlg.SHA256: [0, 1, 7]})
    assert verify_quote(attest, sig, area, nonce=NONCE, pcrs=values, selection=required).pcrs_verified


# -- one negative test per step, in order ------------------------------------------------------------


def test_1_signature_hash_not_allowed():
    attest, sig, area, values = make_quote(hash_alg=HashAlg.SHA1)
    with pytest.raises(HashAlgorithmNotAllowed, match="signature hash sha1 is not allowed"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)
    allowed = DEFAULT_ALLOWED_HASHES | {HashAlg.SHA1}
    assert verify_quote(attest, sig, area, nonce=NONCE, pcrs=values, allowed_hashes=allowed).pcrs_verified


def test_1_quoted_bank_not_allowed_comes_before_the_signature():
    values = pcr_values(banks=(HashAlg.SHA1,))
    attest, _, area, _ = make_quote(values=values)
    bad_sig = sign(ecc_key(), b"something else").encode()
    with pytest.raises(HashAlgorithmNotAllowed, match="quoted PCR bank sha1"):
        verify_quote(attest, bad_sig, area, nonce=NONCE, pcrs=values)


def test_2_flipped_signature_byte():
    attest, sig, area, values = make_quote()
    broken = sig[:-1] + bytes([sig[-1] ^ 1])
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_quote(attest, broken, area, nonce=NONCE, pcrs=values)


def test_2_changed_attest_byte():
    attest, sig, area, values = make_quote()
    changed = attest[:20] + bytes([attest[20] ^ 0x80]) + attest[21:]
    with pytest.raises(SignatureInvalid):
        verify_quote(changed, sig, area, nonce=NONCE, pcrs=values)


def test_2_other_key():
    attest, sig, _, values = make_quote()
    other = public_area_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(SignatureInvalid):
        verify_quote(attest, sig, other, nonce=NONCE, pcrs=values)


def test_2_key_and_signature_type_mismatch():
    attest, sig, _, values = make_quote()  # ECDSA
    with pytest.raises(SignatureInvalid, match="ECDSA signature cannot be made by an RSA key"):
        verify_quote(attest, sig, rsa_key().public_key(), nonce=NONCE, pcrs=values)
    attest, sig, _, values = make_quote(key=rsa_key(), sig_alg=SigAlg.RSASSA)
    with pytest.raises(SignatureInvalid, match="RSASSA signature cannot be made by an ECC key"):
        verify_quote(attest, sig, ecc_key().public_key(), nonce=NONCE, pcrs=values)


def test_2_unsupported_signature_scheme():
    attest, _, area, values = make_quote()
    sig = Signature(SigAlg.ECSCHNORR, HashAlg.SHA256, r=b"\x01", s=b"\x02").encode()
    with pytest.raises(SignatureInvalid, match="ECSCHNORR signatures are not supported"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)


def test_3_ak_that_is_not_a_restricted_signing_key():
    attest, sig, area, values = make_quote()
    unrestricted = dataclasses.replace(
        area, object_attributes=area.object_attributes & ~ObjectAttributes.RESTRICTED
    )
    with pytest.raises(KeyAttributesInvalid, match="not a restricted signing key"):
        verify_quote(attest, sig, unrestricted, nonce=NONCE, pcrs=values)
    decrypting = dataclasses.replace(
        area, object_attributes=area.object_attributes | ObjectAttributes.DECRYPT
    )
    with pytest.raises(KeyAttributesInvalid):
        verify_quote(attest, sig, decrypting, nonce=NONCE, pcrs=values)


def test_4_wrong_magic():
    attest, sig, area, values = make_quote(magic=0xFF544348)
    with pytest.raises(AttestMagicInvalid, match="0xff544348, want TPM_GENERATED 0xff544347"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)


def test_5_wrong_type():
    values = pcr_values()
    attest = make_attest(values=values)
    certify = dataclasses.replace(
        attest, type=AttestType.CERTIFY, attested=CertifyInfo(SIGNER, SIGNER)
    ).encode()
    sig = sign(ecc_key(), certify).encode()
    area = public_area_from_key(ecc_key().public_key())
    with pytest.raises(AttestTypeInvalid, match=r"CERTIFY \(0x8017\), want QUOTE \(0x8018\)"):
        verify_quote(certify, sig, area, nonce=NONCE, pcrs=values)
    other = dataclasses.replace(attest, type=0x1234, attested=b"whatever").encode()
    with pytest.raises(AttestTypeInvalid, match="0x1234"):
        verify_quote(other, sign(ecc_key(), other).encode(), area, nonce=NONCE, pcrs=values)


def test_6_wrong_nonce():
    attest, sig, area, values = make_quote()
    with pytest.raises(NonceMismatch, match="not the 16-byte nonce"):
        verify_quote(attest, sig, area, nonce=NONCE[:-1] + b"\0", pcrs=values)
    with pytest.raises(NonceMismatch):
        verify_quote(attest, sig, area, nonce=b"", pcrs=values)


def test_7_quoted_selection_is_not_the_required_one():
    attest, sig, area, values = make_quote()
    required = PcrSelection.from_mapping({HashAlg.SHA256: range(18)})
    with pytest.raises(PcrSelectionMismatch, match="quote covers sha256:0,.*,16, required sha256:0,.*,17"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values, selection=required)
    wrong_bank = PcrSelection.from_mapping({HashAlg.SHA384: range(17)})
    with pytest.raises(PcrSelectionMismatch):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values, selection=wrong_bank)


def test_7_a_dropped_pcr_in_the_claim():
    attest, sig, area, values = make_quote()
    del values[HashAlg.SHA256][7]
    with pytest.raises(PcrSelectionMismatch, match="no claimed value for quoted sha256 PCR 7"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)


def test_7_a_missing_bank_in_the_claim():
    attest, sig, area, values = make_quote()
    with pytest.raises(PcrSelectionMismatch, match="no claimed sha256 values"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs={HashAlg.SHA1: {0: bytes(20)}})


def test_8_one_claimed_value_changed():
    attest, sig, area, values = make_quote()
    values[HashAlg.SHA256][16] = bytes(32)
    with pytest.raises(PcrDigestMismatch, match="pcrDigest .* is not sha256 of the claimed values"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)


def test_8_claimed_values_of_the_wrong_length():
    attest, sig, area, values = make_quote(values=pcr_values(indices=[0, 1]))
    v0, v1 = values[HashAlg.SHA256][0], values[HashAlg.SHA256][1]
    # Same concatenation, split differently: the digest alone would not notice.
    shifted = {HashAlg.SHA256: {0: v0[:-1], 1: v0[-1:] + v1}}
    with pytest.raises(PcrDigestMismatch, match="claimed sha256 PCR 0 is 31 bytes, want 32"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=shifted)


def test_8_reordered_banks_change_the_digest():
    values = pcr_values(banks=(HashAlg.SHA256, HashAlg.SHA384), indices=[0, 1])
    sel = PcrSelection.from_mapping({HashAlg.SHA256: [0, 1], HashAlg.SHA384: [0, 1]})
    swapped = PcrSelection.from_mapping({HashAlg.SHA384: [0, 1], HashAlg.SHA256: [0, 1]})
    attest = dataclasses.replace(
        make_attest(values=values, selection=sel),
        attested=QuoteInfo(swapped, digest_of(values, sel, HashAlg.SHA256)),
    ).encode()
    sig = sign(ecc_key(), attest).encode()
    with pytest.raises(PcrDigestMismatch):
        verify_quote(attest, sig, public_area_from_key(ecc_key().public_key()), nonce=NONCE, pcrs=values)


def test_unreadable_inputs_are_invalid_input_not_verification_errors():
    attest, sig, area, values = make_quote()
    with pytest.raises(TpmStructureError, match="truncated"):
        verify_quote(attest[:-1], sig, area, nonce=NONCE, pcrs=values)
    with pytest.raises(TpmStructureError, match="trailing"):
        verify_quote(attest, sig + b"\0", area, nonce=NONCE, pcrs=values)
    with pytest.raises(InvalidInput, match="signing key must be"):
        verify_quote(attest, sig, "not a key", nonce=NONCE, pcrs=values)
    with pytest.raises(InvalidInput, match="attest must be bytes"):
        verify_quote(42, sig, area, nonce=NONCE, pcrs=values)


def test_a_parsed_attest_is_re_encoded_so_edited_fields_do_not_verify():
    from vroot.tpm2 import parse_attest

    attest, sig, area, values = make_quote()
    edited = dataclasses.replace(parse_attest(attest), extra_data=b"attacker nonce")
    with pytest.raises(SignatureInvalid):
        verify_quote(edited, sig, area, nonce=b"attacker nonce", pcrs=values)


# -- certify -----------------------------------------------------------------------------------------

OBJECT_NAME = b"\x00\x0b" + hashlib.sha256(b"object").digest()


def make_certify(**changes):
    attest = dataclasses.replace(
        make_attest(),
        type=AttestType.CERTIFY,
        attested=CertifyInfo(OBJECT_NAME, b"\x00\x0b" + hashlib.sha256(b"qn").digest()),
    )
    data = dataclasses.replace(attest, **changes).encode()
    return data, sign(ecc_key(), data).encode(), public_area_from_key(ecc_key().public_key())


def test_certify_verifies():
    attest, sig, area = make_certify()
    vc = verify_certify(attest, sig, area, qualifying_data=NONCE, certified_name=OBJECT_NAME)
    assert vc.name == OBJECT_NAME and vc.extra_data == NONCE and vc.clock == 123456


@pytest.mark.parametrize(
    "change, kwargs, error, match",
    [
        ({}, {"allowed_hashes": frozenset({HashAlg.SHA384})}, HashAlgorithmNotAllowed, "sha256"),
        ({"magic": 0}, {}, AttestMagicInvalid, "magic"),
        (
            {"type": AttestType.QUOTE, "attested": QuoteInfo(PcrSelection(()), b"")},
            {},
            AttestTypeInvalid,
            "want CERTIFY",
        ),
        ({}, {"qualifying_data": b"x"}, NonceMismatch, "qualifying data"),
        ({}, {"certified_name": b"\x00\x0b" + bytes(32)}, CertifiedNameMismatch, "certified name"),
    ],
)
def test_certify_negative_steps(change, kwargs, error, match):
    attest, sig, area = make_certify(**change)
    args = {"qualifying_data": NONCE, "certified_name": OBJECT_NAME} | kwargs
    with pytest.raises(error, match=match):
        verify_certify(attest, sig, area, **args)


def test_certify_signature_and_signer_attributes():
    attest, sig, area = make_certify()
    with pytest.raises(SignatureInvalid):
        verify_certify(
            attest, sig[:-1] + bytes([sig[-1] ^ 1]), area, qualifying_data=NONCE, certified_name=None
        )
    loose = dataclasses.replace(area, object_attributes=ObjectAttributes.SIGN_ENCRYPT)
    with pytest.raises(KeyAttributesInvalid):
        verify_certify(attest, sig, loose, qualifying_data=NONCE, certified_name=None)


def test_every_failure_is_a_verification_error():
    for error in (
        HashAlgorithmNotAllowed,
        SignatureInvalid,
        KeyAttributesInvalid,
        AttestMagicInvalid,
        AttestTypeInvalid,
        NonceMismatch,
        PcrSelectionMismatch,
        PcrDigestMismatch,
        CertifiedNameMismatch,
    ):
        assert issubclass(error, VerificationError)


# -- damaged evidence never verifies -------------------------------------------------------------------


@pytest.fixture(scope="module")
def quotes():
    return {
        "ecdsa": make_quote(),
        "rsassa": make_quote(key=rsa_key(), sig_alg=SigAlg.RSASSA),
        "rsapss": make_quote(key=rsa_key(), sig_alg=SigAlg.RSAPSS),
    }


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["ecdsa", "rsassa", "rsapss"]), which=st.sampled_from([0, 1]), data=st.data())
def test_damaged_quotes_fail_with_a_verification_error_or_invalid_input(quotes, kind, which, data):
    parts = list(quotes[kind])
    blob = bytearray(parts[which])
    op = data.draw(st.sampled_from(["flip", "cut", "add"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    elif op == "cut":
        del blob[data.draw(st.integers(0, len(blob) - 1)) :]
    else:
        blob += data.draw(st.binary(min_size=1, max_size=8))
    parts[which] = bytes(blob)
    attest, sig, area, values = parts
    with pytest.raises((VerificationError, InvalidInput)):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=values)


def test_nonce_must_be_bytes():
    attest, sig, area, values = make_quote()
    with pytest.raises(InvalidInput, match="nonce must be bytes"):
        verify_quote(attest, sig, area, nonce=NONCE.hex(), pcrs=values)
    assert verify_quote(attest, sig, area, nonce=bytearray(NONCE), pcrs=values).pcrs_verified


def test_claimed_values_must_be_bytes():
    attest, sig, area, values = make_quote(values=pcr_values(indices=[0, 1]))
    as_text = {HashAlg.SHA256: {i: "x" * 32 for i in (0, 1)}}
    with pytest.raises(InvalidInput, match="must be bytes"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs=as_text)
    with pytest.raises(InvalidInput, match="must be bytes"):
        verify_quote(attest, sig, area, nonce=NONCE, pcrs={HashAlg.SHA256: {0: 1, 1: 2}})
