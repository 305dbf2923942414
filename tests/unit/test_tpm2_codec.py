"""vroot.tpm2 on fixed inputs: named adversarial cases, the caps, keys and names, policies, constants."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from vroot.errors import InvalidInput, TpmStructureError
from vroot.tpm2 import (
    AK_ATTRIBUTES,
    TPM_GENERATED_VALUE,
    AttestType,
    CommandCode,
    EccCurve,
    EccPoint,
    Handle,
    HashAlg,
    ObjectAttributes,
    ObjectType,
    PcrSelection,
    PublicArea,
    QuoteInfo,
    SigAlg,
    Signature,
    TpmAlg,
    UnverifiedAttest,
    encode_tpm2_tools_pcrs,
    load_ak,
    parse_attest,
    parse_pcr_selection,
    parse_public,
    parse_signature,
    parse_tpm2_tools_pcrs,
    pcr_values_digest,
    policy_command_code,
    policy_pcr,
    policy_secret,
    public_area_from_key,
    qualified_name,
    split_attest,
)

SEL = PcrSelection.from_mapping({HashAlg.SHA256: [0, 1, 2, 16], HashAlg.SHA1: [23]})


def quote(**changes) -> UnverifiedAttest:
    a = UnverifiedAttest(
        magic=TPM_GENERATED_VALUE,
        type=AttestType.QUOTE,
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=b"nonce",
        clock=1,
        reset_count=2,
        restart_count=3,
        safe=False,
        firmware_version=4,
        attested=QuoteInfo(SEL, bytes(32)),
    )
    return dataclasses.replace(a, **changes)


# -- PCR selection -----------------------------------------------------------------------------------


def test_pcr_selection_from_mapping_orders_and_iterates_in_digest_order():
    sel = PcrSelection.from_mapping({"sha384": [7, 0, 7], HashAlg.SHA1: {3, 1}})
    assert sel.banks == ((HashAlg.SHA384, (0, 7)), (HashAlg.SHA1, (1, 3)))
    assert list(sel) == [(HashAlg.SHA384, 0), (HashAlg.SHA384, 7), (HashAlg.SHA1, 1), (HashAlg.SHA1, 3)]
    assert sel.to_mapping() == {HashAlg.SHA384: (0, 7), HashAlg.SHA1: (1, 3)}
    assert len(sel) == 4 and str(sel) == "sha384:0,7+sha1:1,3"


def test_pcr_selection_wire_form():
    # count 1; sha256, sizeofSelect 3, PCR 0 and 16: bit 0 of byte 0, bit 0 of byte 2
    assert PcrSelection.from_mapping({HashAlg.SHA256: [0, 16]}).encode() == bytes.fromhex(
        "00000001000b03010001"
    )
    assert PcrSelection.from_mapping({HashAlg.SHA256: [31]}).encode() == bytes.fromhex(
        "00000001000b0400000080"
    )


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({HashAlg.SHA256: [32]}, "out of range"),
        ({HashAlg.SHA256: [-1]}, "out of range"),
        ({"md5": [0]}, "unknown hash algorithm"),
        ({0x1234: [0]}, "unknown hash algorithm id 0x1234"),
    ],
)
def test_pcr_selection_rejects_bad_mappings(mapping, message):
    with pytest.raises(InvalidInput, match=message):
        PcrSelection.from_mapping(mapping)


@pytest.mark.parametrize(
    "hex_data, message",
    [
        ("00000011", "17 banks, at most 16"),  # malicious_number_of_banks: refused before reading
        ("00000001000b05ffffffffff", "sizeofSelect: 5 bytes, at most 4"),
        ("00000002000b03010000000b03010000", "bank sha256 listed twice"),
        ("000000011234030100 00".replace(" ", ""), "unknown hash algorithm 0x1234"),
        ("00000001000b0301", "truncated"),
        ("00000001000b03010000ff", "1 trailing bytes"),
    ],
)
def test_pcr_selection_adversarial(hex_data, message):
    with pytest.raises(TpmStructureError, match=message):
        parse_pcr_selection(bytes.fromhex(hex_data))


# -- TPMS_ATTEST ---------------------------------------------------------------------------------------


def test_every_truncation_of_a_quote_is_an_error_at_an_offset():
    data = quote().encode()
    for n in range(len(data)):
        with pytest.raises(TpmStructureError) as info:
            parse_attest(data[:n])
        assert info.value.offset is not None and 0 <= info.value.offset <= n


def test_trailing_byte_is_an_error():
    with pytest.raises(TpmStructureError, match="TPMS_ATTEST: 1 trailing bytes"):
        parse_attest(quote().encode() + b"\0")


def test_tpm2b_longer_than_its_maximum_is_rejected_before_reading():
    data = bytearray(quote(extra_data=b"").encode())
    # extraData size field sits after magic (4), type (2) and qualifiedSigner (2 + 34).
    struct.pack_into(">H", data, 42, 67)
    with pytest.raises(TpmStructureError, match=r"extraData: size 67 exceeds the maximum 66") as info:
        parse_attest(bytes(data) + bytes(67))
    assert info.value.offset == 42


def test_safe_must_be_yes_or_no():
    data = bytearray(quote().encode())
    data[4 + 2 + 2 + 34 + 2 + 5 + 16] = 2  # magic, type, qualifiedSigner, extraData, clock..restartCount
    with pytest.raises(TpmStructureError, match="safe: 2 is not TPMI_YES_NO"):
        parse_attest(bytes(data))


def test_any_magic_and_type_parse():
    a = quote(magic=0x12345678)
    assert parse_attest(a.encode()).magic == 0x12345678
    time_attest = quote(type=AttestType.TIME, attested=b"\x01\x02")
    assert parse_attest(time_attest.encode()).attested == b"\x01\x02"
    assert parse_attest(time_attest.encode()).quote is None


def test_tpm2b_attest_is_told_apart_from_bare():
    bare = quote().encode()
    sized = struct.pack(">H", len(bare)) + bare
    assert split_attest(sized) == (bare, quote())
    assert split_attest(bare) == (bare, quote())
    # A size that matches but a payload that does not decode: read as bare (and fail as bare would).
    with pytest.raises(TpmStructureError):
        parse_attest(struct.pack(">H", 4) + b"\xff\x54\x43\x47")


def test_attest_writer_refuses_what_the_parser_would_refuse():
    with pytest.raises(InvalidInput, match="exceeds the maximum 66"):
        quote(extra_data=bytes(67))
    with pytest.raises(InvalidInput, match="needs attested as QuoteInfo"):
        quote(attested=b"raw")
    with pytest.raises(InvalidInput, match="32-bit"):
        quote(reset_count=2**32)


# -- TPMT_SIGNATURE ----------------------------------------------------------------------------------


def test_signature_forms():
    ecdsa = Signature(SigAlg.ECDSA, HashAlg.SHA256, r=b"\x00\x01", s=b"\x02")
    assert ecdsa.encode() == bytes.fromhex("0018000b0002000100010 2".replace(" ", ""))
    assert ecdsa.to_der() == bytes.fromhex("3006020101020102")
    rsassa = Signature(SigAlg.RSASSA, HashAlg.SHA1, sig=b"\xaa")
    assert parse_signature(rsassa.encode()) == rsassa
    hmac_sig = Signature(SigAlg.HMAC, HashAlg.SHA256, sig=bytes(32))
    assert parse_signature(hmac_sig.encode()).sig == bytes(32)
    with pytest.raises(InvalidInput, match="no DER"):
        rsassa.to_der()


@pytest.mark.parametrize(
    "hex_data, message",
    [
        ("0010000b", "TPM_ALG_NULL"),
        ("0099000b0000", "unknown signature algorithm 0x0099"),
        ("00140099000101", "unknown hash algorithm 0x0099"),
        ("0014000b0201" + "00" * 513, "size 513 exceeds the maximum 512"),
        ("0018000b0051" + "00" * 81 + "0000", "size 81 exceeds the maximum 80"),
        ("0014000b0002aa", "truncated"),
        ("0014000b0001aa00", "1 trailing bytes"),
    ],
)
def test_signature_adversarial(hex_data, message):
    with pytest.raises(TpmStructureError, match=message):
        parse_signature(bytes.fromhex(hex_data))


# -- TPMT_PUBLIC, keys, names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        ec.generate_private_key(ec.SECP521R1()).public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
        rsa.generate_private_key(3, 1024).public_key(),
    ],
    ids=["p256", "p384", "p521", "rsa2048", "rsa1024-e3"],
)
def test_public_area_from_key_and_back(key):
    area = public_area_from_key(key)
    assert area.object_attributes == AK_ATTRIBUTES and area.is_restricted_signing
    same = parse_public(area.encode(sized=True))
    assert same == area
    assert same.public_key().public_numbers() == key.public_numbers()
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_ak(spki).public_numbers() == key.public_numbers()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_ak(der).public_numbers() == key.public_numbers()
    assert load_ak(area.encode()) == area


def test_rsa_default_exponent_is_written_as_zero():
    area = public_area_from_key(rsa.generate_private_key(65537, 2048).public_key())
    assert area.exponent == 0 and area.public_key().public_numbers().e == 65537


def test_name_is_name_alg_and_digest_of_tpmt_public():
    area = public_area_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert area.name() == b"\x00\x0b" + hashlib.sha256(area.encode()).digest()
    assert dataclasses.replace(area, name_alg=HashAlg.SHA384).name()[:2] == b"\x00\x0c"
    with pytest.raises(InvalidInput, match="no digest name"):
        dataclasses.replace(area, name_alg=None).name()


def test_qualified_name():
    ek_name = b"\x00\x0b" + bytes(range(32))
    ek_qn = qualified_name(Handle.ENDORSEMENT.to_bytes(4, "big"), ek_name)
    assert ek_qn == b"\x00\x0b" + hashlib.sha256(bytes.fromhex("4000000b") + ek_name).digest()
    ak_name = b"\x00\x0b" + bytes(32)
    assert qualified_name(ek_qn, ak_name) == b"\x00\x0b" + hashlib.sha256(ek_qn + ak_name).digest()
    assert qualified_name(ek_qn, b"\x40\x00\x00\x01") == b"\x40\x00\x00\x01"
    with pytest.raises(InvalidInput):
        qualified_name(ek_qn, b"\x00\x0b\x01")


def test_point_not_on_the_curve_does_not_load():
    area = PublicArea(
        ObjectType.ECC,
        HashAlg.SHA256,
        AK_ATTRIBUTES,
        curve=EccCurve.NIST_P256,
        unique=EccPoint(b"\x01", b"\x02"),
    )
    with pytest.raises(InvalidInput, match="not on the curve"):
        area.public_key()
    with pytest.raises(InvalidInput, match="not supported"):
        dataclasses.replace(area, curve=EccCurve.BN_P256).public_key()
    keyed = PublicArea(ObjectType.KEYEDHASH, HashAlg.SHA256, ObjectAttributes(0))
    with pytest.raises(InvalidInput, match="no public key"):
        keyed.public_key()


@pytest.mark.parametrize(
    "hex_data, message",
    [
        ("0002000b00", "unsupported object type 0x0002"),
        ("0001009900000000", "unknown hash algorithm 0x0099"),
        ("0001000b000000000041" + "00" * 65, "authPolicy: size 65 exceeds the maximum 64"),
        ("0001000b0000000000000099", "0x0099 is not a symmetric object algorithm"),
        ("0001000b00000000000000100018", "0x0018 is not allowed here"),
        ("0023000b00000000000000100010000300170000", "TPMS_ECC_PARMS.kdf.scheme: 0x0017"),
    ],
)
def test_public_adversarial(hex_data, message):
    with pytest.raises(TpmStructureError, match=message):
        parse_public(bytes.fromhex(hex_data))


def test_load_ak_rejects_non_keys():
    with pytest.raises(InvalidInput, match="PEM"):
        load_ak(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidInput, match="DER"):
        load_ak(b"\x30\x03\x02\x01\x01")


# -- policies -------------------------------------------------------------------------------------------


def test_ek_template_policy_is_policy_secret_of_the_endorsement_hierarchy():
    # TCG EK Credential Profile, the authPolicy of every low-range EK template (SHA-256).
    want = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
    assert policy_secret(None, Handle.ENDORSEMENT.to_bytes(4, "big"), alg=HashAlg.SHA256) == want


def test_policy_command_code_duplicate_matches_tpm_notes():
    want = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x14B)).digest()  # TPM-NOTES section 6
    assert policy_command_code(None, CommandCode.Duplicate, alg=HashAlg.SHA256) == want
    assert policy_command_code(bytes(32), 0x14B, alg=HashAlg.SHA256) == want


def test_policy_pcr_matches_tpm_notes():
    pcr16 = hashlib.sha256(b"pcr16").digest()
    sel = PcrSelection.from_mapping({HashAlg.SHA256: [16]})
    values = {HashAlg.SHA256: {16: pcr16}}
    digest = pcr_values_digest(values, sel, HashAlg.SHA256)
    assert digest == hashlib.sha256(pcr16).digest()
    # TPM-NOTES section 5: H(0^32 || 0x17F || selection || H(PCR values))
    want = hashlib.sha256(bytes(32) + struct.pack(">I", 0x17F) + sel.encode() + digest).digest()
    assert policy_pcr(None, sel, digest, alg=HashAlg.SHA256) == want
    chained = policy_command_code(want, CommandCode.Unseal, alg=HashAlg.SHA256)
    assert chained == hashlib.sha256(want + struct.pack(">II", 0x16C, 0x15E)).digest()


def test_policy_inputs_are_checked():
    sel = PcrSelection.from_mapping({HashAlg.SHA256: [16]})
    with pytest.raises(InvalidInput, match="no value for sha256 PCR 16"):
        pcr_values_digest({}, sel, HashAlg.SHA256)
    with pytest.raises(InvalidInput, match="PCR 16 is 20 bytes"):
        pcr_values_digest({HashAlg.SHA256: {16: bytes(20)}}, sel, HashAlg.SHA256)
    with pytest.raises(InvalidInput, match="policy digest of 20 bytes"):
        policy_command_code(bytes(20), CommandCode.Duplicate, alg=HashAlg.SHA256)


def test_policy_secret_with_policy_ref_hashes_twice():
    name = b"\x00\x0b" + bytes(32)
    first = hashlib.sha256(bytes(32) + struct.pack(">I", 0x151) + name).digest()
    assert (
        policy_secret(None, name, policy_ref=b"ref", alg=HashAlg.SHA256)
        == hashlib.sha256(first + b"ref").digest()
    )


# -- constants agree with the TSS ------------------------------------------------------------------------


def test_constants_agree_with_tpm2_pytss():
    tss = pytest.importorskip("tpm2_pytss")
    for cc in CommandCode:
        assert getattr(tss.TPM2_CC, cc.name) == cc
    for alg in TpmAlg:
        assert getattr(tss.TPM2_ALG, alg.name) == alg
    for h in HashAlg:
        if h is not HashAlg.SM3_256:
            assert getattr(tss.TPM2_ALG, h.name) == h
    for bit in ObjectAttributes:
        assert getattr(tss.TPMA_OBJECT, bit.name) == bit
    for curve in EccCurve:
        assert getattr(tss.TPM2_ECC, curve.name) == curve
    for st_ in AttestType:
        if st_ is not AttestType.NV_DIGEST:  # newer than tpm2-pytss 3.0
            assert getattr(tss.TPM2_ST, f"ATTEST_{st_.name}") == st_
    assert int(tss.TPM2_GENERATED.VALUE) == TPM_GENERATED_VALUE


# -- tpm2-tools PCR file --------------------------------------------------------------------------------


def test_tools_pcr_file_layout_for_17_pcrs():
    values = {HashAlg.SHA256: {i: bytes([i]) * 32 for i in range(17)}}
    data = encode_tpm2_tools_pcrs(values)
    assert len(data) == 132 + 4 + 3 * 532 == 1732  # TPM-NOTES section 9
    assert data[:8] == bytes.fromhex("010000000b0003ff")
    assert struct.unpack_from("<I", data, 132)[0] == 3
    assert parse_tpm2_tools_pcrs(data) == values


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\0", "trailing bytes"),
        (lambda d: b"\x11" + d[1:], "count 17, at most 16"),
        (lambda d: d[:4] + b"\x99\x00" + d[6:], "unknown hash algorithm 0x0099"),
        (lambda d: d[:6] + b"\x05" + d[7:], "sizeofSelect 5"),
        (lambda d: d[:132] + struct.pack("<I", 1000) + d[136:], "1000 digest blocks"),
        (lambda d: d[:136] + struct.pack("<I", 9) + d[140:], "TPML_DIGEST.count 9"),
        (lambda d: d[:140] + struct.pack("<H", 65) + d[142:], "digest size 65"),
        (lambda d: d[:140] + struct.pack("<H", 20) + d[142:], "20-byte digest, want 32"),
        (lambda d: d[:136] + struct.pack("<I", 7) + d[140:], "7 digests for 8 selected PCRs"),
    ],
)
def test_tools_pcr_file_adversarial(mutate, message):
    data = encode_tpm2_tools_pcrs({HashAlg.SHA256: {i: bytes(32) for i in range(8)}})
    with pytest.raises(TpmStructureError, match=message):
        parse_tpm2_tools_pcrs(mutate(data))


def test_package_exports_load_lazily_and_match_all():
    import vroot.tpm2 as tpm2

    assert set(tpm2.__all__) == set(tpm2._WHERE) | {"HashAlg"}
    for name in tpm2.__all__:
        assert getattr(tpm2, name) is not None
    with pytest.raises(AttributeError):
        tpm2.no_such_name  # noqa: B018
