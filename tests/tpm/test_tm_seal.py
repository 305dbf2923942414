"""Seal/unseal under PolicyPCR, the software PolicyPCR digest against a trial session, and signing
with a PCR-bound key."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from tpm2_pytss import TSS2_Exception

from vroot.errors import InvalidInput, TmError, TmPolicyFailed
from vroot.tm import DUPLICATE_POLICY, PolicyCommandCode, PolicyPcr
from vroot.tm._policy import normalize_selection, policy_digest
from vroot.tm.client import public_pem
from vroot.tpm2 import CommandCode, HashAlg, pcr_values_digest, policy_command_code, policy_pcr

pytestmark = pytest.mark.tpm

SEL16 = {HashAlg.SHA256: [16]}
SECRET = b"disk key: 0123456789abcdef0123456789abcdef"


def extend(tm, pcr: int, data: bytes) -> None:
    tm.pcr_extend(pcr, {alg: alg.digest(data) for alg in tm.pcr_banks()})


@pytest.mark.parametrize(
    "selection",
    [
        {HashAlg.SHA256: [16]},
        {HashAlg.SHA256: [0, 7, 16, 23]},
        {HashAlg.SHA1: [16], HashAlg.SHA256: [0, 16], HashAlg.SHA384: [23]},
        {HashAlg.SHA256: range(24)},
    ],
)
def test_software_policy_pcr_digest_equals_trial_session(tm, selection):
    extend(tm, 16, b"kernel")
    extend(tm, 23, b"app")
    values = tm.pcr_read(selection)
    sel = normalize_selection(selection)  # the order PolicyPcr.of sends to the TPM
    software = policy_pcr(None, sel, pcr_values_digest(values, sel, HashAlg.SHA256), alg=HashAlg.SHA256)
    assert software == tm.trial_policy([PolicyPcr.of(selection)])
    assert policy_digest([PolicyPcr.of(selection)], values) == software
    assert tm.pcr_policy_digest(selection) == tm.trial_policy([PolicyPcr.of(selection)])


def test_software_command_code_and_chained_digests_equal_trial(tm):
    assert policy_command_code(None, CommandCode.Duplicate, alg=HashAlg.SHA256) == tm.trial_policy(
        [PolicyCommandCode(CommandCode.Duplicate)]
    )
    assert policy_digest(DUPLICATE_POLICY) == tm.trial_policy(DUPLICATE_POLICY)
    steps = [PolicyPcr.of(SEL16), PolicyCommandCode(0x15D)]  # PCR, then only TPM2_Sign
    assert policy_digest(steps, tm.pcr_read(SEL16)) == tm.trial_policy(steps)
    assert tm.session_handles() == []


def test_seal_unseal_and_policy_failure(tm):
    extend(tm, 16, b"good boot")
    with tm.create_srk() as srk:
        blob = tm.seal(srk, SECRET, policy_digest=tm.pcr_policy_digest(SEL16))
        assert tm.unseal(srk, blob, pcrs=SEL16) == SECRET
        assert tm.unseal(srk, blob, pcrs=SEL16) == SECRET  # any number of times
        extend(tm, 16, b"something else ran")
        with pytest.raises(TmPolicyFailed) as err:
            tm.unseal(srk, blob, pcrs=SEL16)
        assert err.value.rc is not None and (err.value.rc & 0xBF) == 0x9D  # TPM_RC_POLICY_FAIL
        assert isinstance(err.value, TmError)
        assert isinstance(err.value.__cause__, TSS2_Exception)
        assert tm.transient_handles() == [srk.handle]
        assert tm.session_handles() == []


def test_seal_to_future_pcr_values(tm):
    """The software digest lets the host seal to values the PCRs will have after the next boot."""
    banks = tm.pcr_banks()
    future = {alg: {16: alg.digest(alg.digest_size * b"\0" + alg.digest(b"next kernel"))} for alg in banks}
    policy = policy_digest([PolicyPcr.of(SEL16)], future)
    with tm.create_srk() as srk:
        blob = tm.seal(srk, SECRET, policy_digest=policy)
        with pytest.raises(TmPolicyFailed):
            tm.unseal(srk, blob, pcrs=SEL16)  # not yet
        extend(tm, 16, b"next kernel")
        assert tm.unseal(srk, blob, pcrs=SEL16) == SECRET


def test_unseal_with_other_selection_or_no_policy_fails(tm):
    with tm.create_srk() as srk:
        blob = tm.seal(srk, SECRET, policy_digest=tm.pcr_policy_digest(SEL16))
        with pytest.raises(TmPolicyFailed):
            tm.unseal(srk, blob, pcrs={HashAlg.SHA256: [15]})
        with pytest.raises(TmError) as err:  # no userWithAuth: the password cannot unseal it
            tm.unseal(srk, blob)
        assert not isinstance(err.value, TmPolicyFailed)
        assert tm.transient_handles() == [srk.handle]
        assert tm.session_handles() == []


def test_sealed_blob_is_bound_to_its_parent(swtpm_factory):
    from vroot.tm.client import TmClient

    a, b = swtpm_factory(), swtpm_factory()
    with TmClient.open(a.tcti) as tma, TmClient.open(b.tcti) as tmb:
        with tma.create_srk() as srk:
            blob = tma.seal(srk, SECRET, policy_digest=tma.pcr_policy_digest(SEL16))
        with tmb.create_srk() as srk_b:  # another TPM: another seed, another SRK
            with pytest.raises(TmError):
                tmb.unseal(srk_b, blob, pcrs=SEL16)
            assert tmb.transient_handles() == [srk_b.handle]


def test_seal_bad_arguments(tm):
    with tm.create_srk() as srk:
        with pytest.raises(InvalidInput, match="128"):
            tm.seal(srk, b"x" * 129, policy_digest=bytes(32))
        with pytest.raises(InvalidInput):
            tm.seal(srk, b"", policy_digest=bytes(32))
        with pytest.raises(InvalidInput, match="32 bytes"):
            tm.seal(srk, b"x", policy_digest=bytes(20))


def _verify_digest(pem: bytes, digest: bytes, sig: bytes) -> None:
    key = serialization.load_pem_public_key(pem)
    assert sig[:4] == bytes.fromhex("0018000b")  # ECDSA, SHA-256
    n = int.from_bytes(sig[4:6], "big")
    r = int.from_bytes(sig[6 : 6 + n], "big")
    s = int.from_bytes(sig[8 + n :], "big")
    key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # type: ignore[union-attr,call-arg]


def test_sign_digest_unrestricted_key(tm):
    digest = hashlib.sha256(b"to be signed").digest()
    with tm.create_srk() as srk:
        blob = tm.create_signing_key(srk)
        with tm.load(srk, blob) as key:
            sig = tm.sign_digest(key, digest)
    _verify_digest(public_pem(blob.public), digest, sig)


def test_sign_digest_with_pcr_policy(tm):
    digest = hashlib.sha256(b"certificate tbs").digest()
    with tm.create_srk() as srk:
        blob = tm.create_signing_key(srk, policy_digest=tm.pcr_policy_digest(SEL16))
        with tm.load(srk, blob) as key:
            sig = tm.sign_digest(key, digest, policy=[PolicyPcr.of(SEL16)])
            _verify_digest(public_pem(blob.public), digest, sig)
            with pytest.raises(TmError):
                tm.sign_digest(key, digest)  # no userWithAuth
            extend(tm, 16, b"tampered")
            with pytest.raises(TmPolicyFailed):
                tm.sign_digest(key, digest, policy=[PolicyPcr.of(SEL16)])
        assert tm.transient_handles() == [srk.handle]
        assert tm.session_handles() == []


def test_restricted_ak_refuses_external_digest(tm):
    with tm.create_primary_ek() as ek, tm.load(ek, tm.create_ak(ek)) as ak:
        with pytest.raises(TmError):
            tm.sign_digest(ak, hashlib.sha256(b"\xff\x54\x43\x47 forged attest").digest())


_NOISY = """
import sys
from vroot.tm.client import TmClient
from vroot.errors import TmError
with TmClient.open(sys.argv[1]) as tm, tm.create_srk() as srk:
    blob = tm.seal(srk, b"x", policy_digest=bytes(32))
    try:
        tm.unseal(srk, blob, pcrs={tm.pcr_banks()[0]: [0]})
    except TmError:
        print("failed as expected")
"""


def test_expected_failures_print_no_esys_noise(swtpm):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TSS2_LOG"}
    out = subprocess.run(
        [sys.executable, "-c", _NOISY, swtpm.tcti], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "failed as expected", out.stderr
    assert out.stderr == ""


def test_open_unreachable_tpm_is_a_tm_error(tmp_path):
    from vroot.tm.client import TmClient

    with pytest.raises(TmError) as err:
        TmClient.open(f"swtpm:path={tmp_path}/none.sock")
    assert err.value.rc is not None
