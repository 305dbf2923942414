"""Hypothesis: every vroot.tpm2 structure round-trips, and random or damaged bytes never crash a parser.

`parse(x.encode()) == x` for every structure; any bytes given to any parser either decode or raise
`TpmStructureError` / `InvalidInput`; the fast decoding paths agree with the careful readers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vroot.errors import InvalidInput, TpmStructureError
from vroot.tpm2 import (
    AttestType,
    CertifyInfo,
    EccCurve,
    EccPoint,
    HashAlg,
    ObjectAttributes,
    ObjectType,
    PcrSelection,
    PublicArea,
    QuoteInfo,
    Scheme,
    SigAlg,
    Signature,
    SymDef,
    TpmAlg,
    UnverifiedAttest,
    encode_tpm2_tools_pcrs,
    load_ak,
    parse_attest,
    parse_pcr_selection,
    parse_public,
    parse_signature,
    parse_tpm2_tools_pcrs,
    split_attest,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
hash_algs = st.sampled_from(list(HashAlg))


def blobs(max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


@st.composite
def pcr_selections(draw) -> PcrSelection:
    algs = draw(st.lists(hash_algs, unique=True, max_size=16))
    banks = []
    sizes = []
    for alg in algs:
        indices = tuple(sorted(draw(st.sets(st.integers(0, 31), max_size=32))))
        banks.append((alg, indices))
        need = indices[-1] // 8 + 1 if indices else 0
        sizes.append(draw(st.integers(need, 4)))
    keep_sizes = draw(st.booleans())
    return PcrSelection(tuple(banks), tuple(sizes) if keep_sizes else None)


@st.composite
def attests(draw, types=None) -> UnverifiedAttest:
    kind = draw(st.sampled_from(types or [AttestType.QUOTE, AttestType.CERTIFY, AttestType.TIME, "other"]))
    if kind == "other":
        st_value = draw(u16.filter(lambda v: v not in (AttestType.QUOTE, AttestType.CERTIFY)))
    else:
        st_value = kind
    if st_value == AttestType.QUOTE:
        attested = QuoteInfo(draw(pcr_selections()), draw(blobs(64)))
    elif st_value == AttestType.CERTIFY:
        attested = CertifyInfo(draw(blobs(66)), draw(blobs(66)))
    else:
        attested = draw(blobs(80))
    return UnverifiedAttest(
        magic=draw(st.one_of(st.just(0xFF544347), u32)),
        type=st_value,
        qualified_signer=draw(blobs(66)),
        extra_data=draw(blobs(66)),
        clock=draw(u64),
        reset_count=draw(u32),
        restart_count=draw(u32),
        safe=draw(st.booleans()),
        firmware_version=draw(u64),
        attested=attested,
    )


@st.composite
def signatures(draw) -> Signature:
    alg = draw(st.sampled_from(list(SigAlg)))
    h = draw(hash_algs)
    if alg in (SigAlg.RSASSA, SigAlg.RSAPSS):
        return Signature(alg, h, sig=draw(blobs(512)))
    if alg is SigAlg.HMAC:
        return Signature(alg, h, sig=draw(st.binary(min_size=h.digest_size, max_size=h.digest_size)))
    return Signature(alg, h, r=draw(blobs(80)), s=draw(blobs(80)))


sym_defs = st.one_of(
    st.none(),
    st.builds(
        SymDef,
        st.sampled_from([TpmAlg.AES, TpmAlg.SM4, TpmAlg.CAMELLIA, TpmAlg.TDES]),
        u16,
        st.sampled_from([TpmAlg.CFB, TpmAlg.CBC, TpmAlg.CTR, TpmAlg.OFB, TpmAlg.ECB, TpmAlg.NULL, 0x1234]),
    ),
)
kdfs = st.one_of(
    st.none(),
    st.builds(
        Scheme,
        st.sampled_from([TpmAlg.MGF1, TpmAlg.KDF1_SP800_56A, TpmAlg.KDF2, TpmAlg.KDF1_SP800_108]),
        hash_algs,
    ),
)


@st.composite
def _scheme(draw, kind: ObjectType) -> Scheme | None:
    if draw(st.booleans()):
        return None
    if kind is ObjectType.RSA:
        alg = draw(st.sampled_from([TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP, TpmAlg.RSAES]))
        return Scheme(alg) if alg is TpmAlg.RSAES else Scheme(alg, draw(hash_algs))
    if kind is ObjectType.ECC:
        alg = draw(
            st.sampled_from(
                [TpmAlg.ECDSA, TpmAlg.ECDH, TpmAlg.SM2, TpmAlg.ECSCHNORR, TpmAlg.ECMQV, TpmAlg.ECDAA]
            )
        )
        if alg is TpmAlg.ECDAA:
            return Scheme(alg, draw(hash_algs), count=draw(u16))
        return Scheme(alg, draw(hash_algs))
    alg = draw(st.sampled_from([TpmAlg.HMAC, TpmAlg.XOR]))
    if alg is TpmAlg.XOR:
        return Scheme(alg, draw(hash_algs), kdf=draw(st.sampled_from([TpmAlg.KDF1_SP800_108, TpmAlg.MGF1])))
    return Scheme(alg, draw(hash_algs))


@st.composite
def public_areas(draw, types=None) -> PublicArea:
    kind = draw(st.sampled_from(types or list(ObjectType)))
    common = dict(
        name_alg=draw(st.one_of(st.none(), hash_algs)),
        object_attributes=ObjectAttributes(draw(u32)),
        auth_policy=draw(blobs(64)),
    )
    if kind is ObjectType.RSA:
        return PublicArea(
            kind,
            symmetric=draw(sym_defs),
            scheme=draw(_scheme(kind)),
            key_bits=draw(u16),
            exponent=draw(u32),
            unique=draw(blobs(512)),
            **common,
        )
    if kind is ObjectType.ECC:
        return PublicArea(
            kind,
            symmetric=draw(sym_defs),
            scheme=draw(_scheme(kind)),
            curve=draw(st.one_of(st.sampled_from(list(EccCurve)), u16)),
            kdf=draw(kdfs),
            unique=EccPoint(draw(blobs(80)), draw(blobs(80))),
            **common,
        )
    if kind is ObjectType.SYMCIPHER:
        return PublicArea(kind, symmetric=draw(sym_defs), unique=draw(blobs(64)), **common)
    return PublicArea(kind, scheme=draw(_scheme(kind)), unique=draw(blobs(64)), **common)


@st.composite
def pcr_values(draw) -> dict[HashAlg, dict[int, bytes]]:
    out = {}
    for alg in draw(st.lists(hash_algs, unique=True, max_size=4)):
        indices = draw(st.sets(st.integers(0, 31), max_size=24))
        out[alg] = {
            i: draw(st.binary(min_size=alg.digest_size, max_size=alg.digest_size)) for i in sorted(indices)
        }
    return out


# -- round trips ------------------------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(pcr_selections())
def test_pcr_selection_round_trips(sel):
    assert parse_pcr_selection(sel.encode()) == sel
    again = parse_pcr_selection(sel.encode())
    assert again.encode() == sel.encode()  # sizeofSelect kept: the same bytes again
    assert list(again) == [(alg, i) for alg, indices in sel.banks for i in indices]


@SETTINGS
@given(attests())
def test_attest_round_trips_bare_and_sized(a):
    bare = a.encode()
    assume((a.magic >> 16) != len(bare) - 2)  # the one documented ambiguity (see split_attest)
    assert parse_attest(bare) == a
    assert split_attest(bare)[0] == bare
    sized = a.encode(sized=True)
    assert parse_attest(sized) == a
    assert split_attest(sized)[0] == bare


@SETTINGS
@given(signatures())
def test_signature_round_trips(sig):
    assert parse_signature(sig.encode()) == sig
    assert parse_signature(sig.encode()).encode() == sig.encode()


@SETTINGS
@given(public_areas())
def test_public_area_round_trips_bare_and_sized(area):
    assert parse_public(area.encode()) == area
    assert parse_public(area.encode(sized=True)) == area
    assert parse_public(area.encode()).encode() == area.encode()


@SETTINGS
@given(pcr_values())
def test_tpm2_tools_pcr_file_round_trips(values):
    assert parse_tpm2_tools_pcrs(encode_tpm2_tools_pcrs(values)) == values


# -- random and damaged bytes -----------------------------------------------------------------------

PARSERS = [
    parse_attest,
    parse_signature,
    parse_public,
    parse_pcr_selection,
    parse_tpm2_tools_pcrs,
    load_ak,
]


def _only_invalid_input(parse, data):
    try:
        parse(data)
    except (TpmStructureError, InvalidInput):
        pass


@pytest.mark.parametrize("parse", PARSERS, ids=lambda p: p.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_invalid_input(parse, data):
    _only_invalid_input(parse, data)


def _damaged(valid: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """A valid encoding with bytes changed, removed or added: closer to the paths parsers take."""

    @st.composite
    def build(draw):
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["set", "cut", "add"]))
            if op == "set" and data:
                data[draw(st.integers(0, len(data) - 1))] = draw(u8)
            elif op == "cut" and data:
                del data[draw(st.integers(0, len(data) - 1)) :]
            else:
                data += draw(st.binary(min_size=1, max_size=4))
        return bytes(data)

    return build()


@SETTINGS
@given(_damaged(attests().map(lambda a: a.encode())))
def test_damaged_attest_raises_only_invalid_input(data):
    _only_invalid_input(parse_attest, data)


@SETTINGS
@given(_damaged(signatures().map(lambda s: s.encode())))
def test_damaged_signature_raises_only_invalid_input(data):
    _only_invalid_input(parse_signature, data)


@SETTINGS
@given(_damaged(public_areas().map(lambda p: p.encode(sized=True))))
def test_damaged_public_raises_only_invalid_input(data):
    _only_invalid_input(parse_public, data)
    _only_invalid_input(load_ak, data)


@SETTINGS
@given(_damaged(pcr_values().map(encode_tpm2_tools_pcrs)))
def test_damaged_tools_pcr_file_raises_only_invalid_input(data):
    _only_invalid_input(parse_tpm2_tools_pcrs, data)


# -- the fast paths agree with the careful readers -------------------------------------------------


def _careful(read, data):
    from vroot.tpm2._wire import Reader

    r = Reader(data)
    try:
        value = read(r)
        r.done("x")
    except TpmStructureError:
        return None
    return value


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=300),
        attests().map(lambda a: a.encode()),
        _damaged(attests().map(lambda a: a.encode())),
    )
)
def test_fast_attest_decoding_agrees_with_the_reader(data):
    from vroot.tpm2._attest import _fast_attest, _read_attest

    fast = _fast_attest(data, 0)
    careful = _careful(_read_attest, data)
    if fast is not None:
        assert fast == careful
        assert fast.attested.__class__ is careful.attested.__class__
        if isinstance(fast.attested, QuoteInfo):
            assert fast.attested.pcr_select.encode() == careful.attested.pcr_select.encode()


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        signatures().map(lambda s: s.encode()),
        _damaged(signatures().map(lambda s: s.encode())),
    )
)
def test_fast_signature_decoding_agrees_with_the_reader(data):
    from vroot.tpm2._signature import fast_signature, read_signature

    fast = fast_signature(data)
    careful = _careful(read_signature, data)
    if fast is not None:
        assert fast == careful
