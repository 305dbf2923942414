"""IMA appraisal: signatures (RSA, ECDSA P-256 and secp256k1, failing closed), key ids, and the
incremental state the RA server keeps across restarts (RA-5)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from test_baseline_fakes import NOW, ec_key, hashlib_digest, ima_entry, ima_signature, public_pem, rsa_key

from vroot.baseline import (
    Baseline,
    ImaAppraisalState,
    ImaKeyUnknown,
    ImaPolicy,
    ImaReference,
    ImaSignatureInvalid,
    ImaSigningKey,
    Policy,
    appraise_ima_delta,
    ima_key_id,
    verify_ima_signature,
)
from vroot.errors import InvalidInput, ReplayMismatch
from vroot.eventlog import UnverifiedImaLog, replay_ima_log
from vroot.tpm2 import HashAlg

BANKS = (HashAlg.SHA1, HashAlg.SHA256)
CONTENT = b"#!/bin/sh\necho signed\n"
DIGEST = hashlib_digest("sha256", CONTENT)


def _key(private) -> ImaSigningKey:  # noqa: ANN001
    return ImaSigningKey(pem=public_pem(private))


def _signed(private, *, path="/usr/bin/tool", digest=DIGEST, **kw):  # noqa: ANN001, ANN202
    key_id = kw.pop("key_id", None) or ima_key_id(private.public_key())
    return ima_entry(path, CONTENT, signature=ima_signature(private, digest, key_id=key_id, **kw))


def _run(entries, *, keys=(), required=False, allow=None):  # noqa: ANN001, ANN202
    baseline = Baseline(name="b", version="1", ima=ImaReference(digests=allow or {}))
    policy = Policy(group="g", ima=ImaPolicy(signing_keys=tuple(keys), require_signatures=required))
    _, findings = appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=baseline, policy=policy)
    return [(f.id, f.severity) for f in findings]


@pytest.mark.parametrize("private", [rsa_key(), ec_key(), ec_key(ec.SECP256K1())], ids=["rsa", "p256", "secp256k1"])
def test_valid_signature_by_an_accepted_key_accepts_the_file(private):
    """A signed file needs no allowlist entry; with signatures required it is still accepted."""
    assert _run([_signed(private)], keys=[_key(private)]) == []
    assert _run([_signed(private)], keys=[_key(private)], required=True) == []


def test_signature_invalid_fails_closed():
    """ima.signature.invalid for a signature over another digest, even with the path allowed."""
    private = ec_key()
    entry = _signed(private, digest=hashlib_digest("sha256", b"other content"))
    allow = {"/usr/bin/tool": {DIGEST}}
    assert _run([entry], keys=[_key(private)], allow=allow) == [("ima.signature.invalid", "error")]
    assert _run([_signed(private)], keys=[_key(private)], allow=allow) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"size_delta": 0x100}, "size field"),
        ({"version": 3}, "version 3"),
        ({"sig_type": 5}, "type 5"),
        ({"hash_algo": 6}, "sha512 does not match"),
    ],
)
def test_malformed_signatures_are_invalid(change, match):
    private = rsa_key()
    entry = _signed(private, **change)
    keys = {k.key_id: (k,) for k in [_key(private)]}
    with pytest.raises(ImaSignatureInvalid, match=match):
        verify_ima_signature(entry.signature, file_digest=entry.file_digest, digest_alg=entry.digest_alg, keys=keys)
    assert _run([entry], keys=[_key(private)]) == [("ima.signature.invalid", "error")]


def test_truncated_signature_is_invalid():
    with pytest.raises(ImaSignatureInvalid, match="shorter than its header"):
        verify_ima_signature(b"\x03\x02\x04", file_digest=DIGEST, digest_alg="sha256", keys={})


def test_unknown_key_is_a_warning_unless_signatures_are_required():
    """ima.signature.unknown_key: warning (the allowlist decides) or error when signatures are required."""
    signer, accepted = ec_key(seed=7), ec_key(seed=8)
    entry = _signed(signer)
    with pytest.raises(ImaKeyUnknown, match=ima_key_id(signer.public_key()).hex()):
        verify_ima_signature(entry.signature, file_digest=DIGEST, digest_alg="sha256",
                             keys={k.key_id: (k,) for k in [_key(accepted)]})  # fmt: skip
    allow = {"/usr/bin/tool": {DIGEST}}
    assert _run([entry], keys=[_key(accepted)], allow=allow) == [("ima.signature.unknown_key", "warning")]
    assert _run([entry], keys=[_key(accepted)]) == [("ima.signature.unknown_key", "warning"),
                                                    ("ima.file.unknown", "error")]  # fmt: skip
    assert _run([entry], keys=[_key(accepted)], required=True) == [("ima.signature.unknown_key", "error")]


def test_signature_missing_when_required():
    private = ec_key()
    unsigned = ima_entry("/usr/bin/tool", CONTENT)
    allow = {"/usr/bin/tool": {DIGEST}}
    assert _run([unsigned], keys=[_key(private)], required=True, allow=allow) == [("ima.signature.missing", "error")]
    assert _run([unsigned], keys=[_key(private)], allow=allow) == []


def test_signatures_ignored_without_keys_unless_required():
    entry = _signed(ec_key())
    assert _run([entry], allow={"/usr/bin/tool": {DIGEST}}) == []
    assert _run([entry], required=True) == [("ima.signature.unknown_key", "error")]


def test_two_keys_with_one_key_id_are_both_tried():
    private, other = ec_key(seed=21), ec_key(seed=22)
    key_id = b"\x01\x02\x03\x04"
    keys = [ImaSigningKey(pem=public_pem(other), key_id=key_id), ImaSigningKey(pem=public_pem(private), key_id=key_id)]
    assert _run([_signed(private, key_id=key_id)], keys=keys) == []


def test_key_id_is_sha1_of_the_subject_public_key_bits():
    """Key ids: last 4 bytes of SHA-1 of the key's bit string (PKCS#1 for RSA, the EC point)."""
    from cryptography.hazmat.primitives import serialization

    rsa_public = rsa_key().public_key()
    pkcs1 = rsa_public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert ima_key_id(rsa_public) == HashAlg.SHA1.digest(pkcs1)[-4:]
    assert _key(rsa_key()).key_id == ima_key_id(rsa_public)
    assert ImaSigningKey(pem=public_pem(rsa_key()), key_id=b"abcd").key_id == b"abcd"


def _certificate(private, skid: x509.SubjectKeyIdentifier | None) -> str:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ima signer")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
               .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)))  # fmt: skip
    if skid is not None:
        builder = builder.add_extension(skid, critical=False)
    cert = builder.sign(private, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_key_id_comes_from_its_subject_key_identifier():
    private = ec_key(seed=31)
    plain = ImaSigningKey(pem=_certificate(private, None))
    assert plain.key_id == ima_key_id(private.public_key())
    custom = ImaSigningKey(pem=_certificate(private, x509.SubjectKeyIdentifier(b"\x00" * 16 + b"\xde\xad\xbe\xef")))
    assert custom.key_id == b"\xde\xad\xbe\xef"


def test_signing_keys_refuse_bad_pem_and_other_key_types():
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(InvalidInput, match="not a PEM"):
        ImaSigningKey(pem="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidInput, match="RSA or ECDSA"):
        ImaSigningKey(pem=public_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(InvalidInput, match="4 bytes"):
        ImaSigningKey(pem=public_pem(ec_key()), key_id=b"abc")


# --- incremental state --------------------------------------------------------------------------

def _entries(n: int, start: int = 0):  # noqa: ANN202
    return [ima_entry(f"/usr/bin/f{i}", b"%d" % i) for i in range(start, start + n)]


def _quoted(entries) -> dict:  # noqa: ANN001
    replayed = replay_ima_log(UnverifiedImaLog(entries=tuple(entries), format="binary"), banks=BANKS)
    return {alg: {10: bytes(alg.digest_size), **replayed[alg]} for alg in BANKS}


def _baseline(entries, *, bad: set[int] = frozenset()) -> Baseline:  # noqa: ANN001
    allowed = {e.path: {e.file_digest} for i, e in enumerate(entries) if i not in bad}
    return Baseline(name="b", version="1", ima=ImaReference(digests=allowed))


POLICY = Policy(group="g", ima=ImaPolicy())


def test_incremental_appraisal_equals_appraising_everything_at_once():
    entries = _entries(30)
    baseline = _baseline(entries, bad={3, 17, 25})
    whole, _ = appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=baseline, policy=POLICY,
                                  quoted=_quoted(entries))  # fmt: skip
    state = ImaAppraisalState.initial()
    for cut in (0, 10, 20, 30):
        state = ImaAppraisalState.from_json(json.dumps(state.to_json()))  # the RA server restarted
        state, _ = appraise_ima_delta(state, entries[state.entries_seen : cut], baseline=baseline, policy=POLICY,
                                      quoted=_quoted(entries[:cut]))  # fmt: skip
    assert state == whole
    assert [f.event_index for f in state.findings] == [3, 17, 25]


def test_a_bad_file_keeps_the_boot_untrusted_in_later_deltas():
    entries = _entries(6)
    baseline = _baseline(entries, bad={1})
    state, first = appraise_ima_delta(ImaAppraisalState.initial(), entries[:3], baseline=baseline, policy=POLICY)
    state, second = appraise_ima_delta(state, entries[3:], baseline=baseline, policy=POLICY)
    assert [f.id for f in first] == ["ima.file.unknown"] and second == ()
    assert [f.event_index for f in state.findings] == [1]


def test_entries_read_after_the_quote_wait_for_the_next_delta():
    """The agent reads its IMA list after quoting: entries beyond the quoted PCR 10 are left for later."""
    entries = _entries(12)
    baseline = _baseline(entries)
    state, findings = appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=baseline, policy=POLICY,
                                         quoted=_quoted(entries[:8]))  # fmt: skip
    assert state.entries_seen == 8 and findings == ()
    assert state.pcrs[HashAlg.SHA256][10] == _quoted(entries[:8])[HashAlg.SHA256][10]
    state, _ = appraise_ima_delta(state, entries[8:], baseline=baseline, policy=POLICY, quoted=_quoted(entries))
    assert state.entries_seen == 12


def test_entries_that_do_not_replay_raise_replay_mismatch():
    entries = _entries(5)
    with pytest.raises(ReplayMismatch, match="PCR 10") as caught:
        appraise_ima_delta(ImaAppraisalState.initial(), entries[1:], baseline=_baseline(entries), policy=POLICY,
                           quoted=_quoted(entries))  # fmt: skip
    assert caught.value.pcrs == (10,)
    with pytest.raises(ReplayMismatch, match="not quoted"):
        appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=_baseline(entries), policy=POLICY,
                           quoted={HashAlg.SHA256: {0: bytes(32)}})  # fmt: skip


def test_state_from_json_refuses_bad_documents():
    good = ImaAppraisalState.initial().to_json()
    for bad in ({**good, "extra": 1}, {**good, "entries_seen": -1}, {**good, "pcrs": {"md5": {}}},
                {**good, "pcrs": {"sha256": {"10": "zz"}}}, {**good, "pcrs": {"sha256": {"10": "00"}}},
                {**good, "findings": [{"id": "nope"}]}, "[", 7):  # fmt: skip
        with pytest.raises(InvalidInput):
            ImaAppraisalState.from_json(bad)


STORED = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**60) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=1000)
@given(st.fixed_dictionaries({}, optional={k: STORED for k in ("entries_seen", "pcrs", "findings", "dropped")}),
       STORED)  # fmt: skip
def test_stored_state_and_appraisals_from_random_json_raise_only_invalid_input(state_doc, other):
    """The store's JSON is a document like any other: anything malformed is InvalidInput."""
    from vroot.baseline import Appraisal, Finding

    for decode, doc in ((ImaAppraisalState.from_json, state_doc), (ImaAppraisalState.from_json, other),
                        (Appraisal.from_json, other), (Finding.from_json, other)):  # fmt: skip
        try:
            decode(doc)
        except InvalidInput:
            pass
