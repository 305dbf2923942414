"""No transient object or session is ever leaked (swtpm has 3 object slots and no resource manager)."""

from __future__ import annotations

import os

import pytest
from tpm2_pytss import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from vroot.errors import InvalidInput, TmError, TmPolicyFailed
from vroot.tm import DUPLICATE_POLICY, PolicyPcr
from vroot.tm.client import KeyBlob, TmClient
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

SEL = {HashAlg.SHA256: [16]}


def assert_clean(tm) -> None:
    assert tm.transient_handles() == []
    assert tm.session_handles() == []


def test_thirty_rounds_leave_nothing(tm):
    for n in range(30):
        with tm.create_primary_ek() as ek:
            ak_blob = tm.create_ak(ek)
            with tm.load(ek, ak_blob) as ak:
                tm.quote(ak, {HashAlg.SHA256: range(17)}, os.urandom(16))
                ek_pub = TPM2B_PUBLIC.unmarshal(ek.public)[0]
                secret = os.urandom(32)
                cred, enc = make_credential(ek_pub, secret, TPM2B_NAME(ak.name))
                assert tm.activate_credential(ak, ek, cred.marshal(), enc.marshal()) == secret
                ek.close()  # make room for the SRK
                with tm.create_srk() as srk:
                    data = f"round {n}".encode()
                    blob = tm.seal(srk, data, policy_digest=tm.pcr_policy_digest(SEL))
                    assert tm.unseal(srk, blob, pcrs=SEL) == data
                    tm.certify(srk, ak, qualifying_data=b"%d" % n)
        assert_clean(tm)


def test_failing_operations_leave_nothing(tm):
    with tm.create_srk() as srk:
        blob = tm.seal(srk, b"secret", policy_digest=tm.pcr_policy_digest(SEL))
        tm.pcr_extend(16, {HashAlg.SHA256: os.urandom(32)})
        for _ in range(10):  # more than the 3 slots: a leak would turn into 0x902 quickly
            with pytest.raises(TmPolicyFailed):
                tm.unseal(srk, blob, pcrs=SEL)
            with pytest.raises(TmError):
                tm.unseal(srk, blob)  # no userWithAuth
            with pytest.raises(TmError):  # the TPM refuses a private part that is not its own
                tm.load(srk, KeyBlob(b"\x00\x20" + os.urandom(32), blob.public))
            with pytest.raises(InvalidInput):
                tm.load(srk, KeyBlob(b"\x00", blob.public))
            with tm.load(srk, tm.create_signing_key(srk)) as key:
                with pytest.raises(TmError):  # a policy session for a key that has no policy
                    tm.sign_digest(key, bytes(32), policy=[PolicyPcr.of(SEL)])
                with pytest.raises(TmError):  # a fixedParent key cannot be duplicated
                    tm.duplicate(key, srk.public, policy=DUPLICATE_POLICY)
        assert tm.transient_handles() == [srk.handle]
        assert tm.session_handles() == []
    assert_clean(tm)


def test_failing_credential_and_ek_sessions_leave_nothing(tm):
    with tm.create_primary_ek() as ek, tm.load(ek, tm.create_ak(ek)) as ak:
        ek_pub = TPM2B_PUBLIC.unmarshal(ek.public)[0]
        for _ in range(10):
            cred, enc = make_credential(ek_pub, os.urandom(32), TPM2B_NAME(b"\x00\x0b" + bytes(32)))
            with pytest.raises(TmError):
                tm.activate_credential(ak, ek, cred.marshal(), enc.marshal())
        assert tm.session_handles() == []
    assert_clean(tm)


def test_slots_full_is_a_tm_error_and_leaves_nothing(tm):
    with tm.create_primary_ek() as ek, tm.create_srk() as srk:
        ak_blob = tm.create_ak(ek)
        with tm.load(ek, ak_blob) as ak:
            with pytest.raises(TmError) as err:  # three objects loaded: no slot left
                tm.create_ak(ek)
            assert err.value.rc is not None
            assert sorted(tm.transient_handles()) == sorted([ek.handle, srk.handle, ak.handle])
            assert tm.session_handles() == []
    assert_clean(tm)


def test_close_flushes_what_the_caller_forgot(swtpm):
    tm = TmClient.open(swtpm.tcti)
    tm.create_primary_ek()
    srk = tm.create_srk()
    tm.load(srk, tm.create_signing_key(srk))
    assert len(tm.transient_handles()) == 3
    tm.close()
    tm.close()  # idempotent
    with TmClient.open(swtpm.tcti) as again:
        assert_clean(again)
    with pytest.raises(TmError, match="closed"):
        tm.pcr_banks()


def test_the_leak_detectors_see_leaks(tm):
    """transient_handles/session_handles must see what a leak would leave behind."""
    from tpm2_pytss import ESYS_TR, TPM2_ALG, TPM2_SE, TPMT_SYM_DEF

    e = tm.esapi
    sessions = [
        e.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
        )
        for kind in (TPM2_SE.POLICY, TPM2_SE.HMAC)
    ]
    srk = tm.create_srk()
    try:
        assert tm.transient_handles() == [srk.handle]
        handles = tm.session_handles()
        assert len(handles) == 2 and {h >> 24 for h in handles} == {0x02, 0x03}
    finally:
        for s in sessions:
            e.flush_context(s)
        srk.close()
    assert_clean(tm)
