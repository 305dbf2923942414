"""DP-1, DP-2 across TM restarts and TMs: sealed and bound data survive a stop and start of the
swtpm on the same state (the keys are persistent), and do not open on another swtpm."""

from __future__ import annotations

import os

import pytest
from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_PT,
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
    TSS2_Exception,
)

from vroot.errors import TmError, TmPolicyFailed, VerificationError
from vroot.guest import BINDING_KEY_HANDLE, SRK_HANDLE, bind, binding_public_key, seal, unbind, unseal
from vroot.tm.client import TmClient
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

BOOT = b"guest kernel 6.1"


def extend(tm, pcr: int, data: bytes) -> None:
    tm.pcr_extend(pcr, {alg: alg.digest(data) for alg in tm.pcr_banks()})


def assert_clean(tm) -> None:
    assert tm.transient_handles() == []
    assert tm.session_handles() == []


def restart(swtpm_factory, proc, *, orderly: bool = False):
    """Stop `proc` and start a swtpm on the same state dir (PCRs reset, persistent objects kept)."""
    if orderly:
        with TmClient.open(proc.tcti) as tm:
            tm.shutdown()
    proc.stop()
    return swtpm_factory(state_dir=proc.state_dir)


def test_sealed_and_bound_data_survive_a_restart(swtpm_factory):
    """Sealed to PCR 23 (at its reset value) and to PCR 16 (extended again after the restart)."""
    proc = swtpm_factory()
    big = os.urandom(10 * 1024)
    with TmClient.open(proc.tcti) as tm:
        extend(tm, 16, BOOT)
        at_reset = seal(tm, b"sealed to PCR 23", pcrs={HashAlg.SHA256: [23]}).encode()
        big_blob = seal(tm, big, pcrs={HashAlg.SHA256: [23]}).encode()
        after_boot = seal(tm, b"sealed to PCR 16", pcrs={HashAlg.SHA256: [16]}).encode()
        bound = bind(binding_public_key(tm), b"bound before the restart", rng=os.urandom)
        srk = tm.read_public(SRK_HANDLE)[1]
    proc = restart(swtpm_factory, proc)
    with TmClient.open(proc.tcti) as tm:
        assert tm.persistent_handles() == [SRK_HANDLE, BINDING_KEY_HANDLE]
        assert tm.read_public(SRK_HANDLE)[1] == srk
        assert unseal(tm, at_reset) == b"sealed to PCR 23"
        assert unseal(tm, big_blob) == big
        assert unbind(tm, bound) == b"bound before the restart"
        with pytest.raises(TmPolicyFailed, match=r"sha256 PCR 16 \(sealed to [0-9a-f]{16}…, now 0{16}…\)"):
            unseal(tm, after_boot)  # PCR 16 is back at its reset value
        extend(tm, 16, BOOT)  # the guest boots the same kernel again
        assert unseal(tm, after_boot) == b"sealed to PCR 16"
        assert_clean(tm)


def test_blobs_of_one_tm_do_not_open_on_another(swtpm_factory):
    """Same PCR values on both (fresh swtpms), but another owner seed: another SRK, another key."""
    a, b = swtpm_factory(), swtpm_factory()
    with TmClient.open(a.tcti) as tma:
        sealed = seal(tma, b"only on A", pcrs={HashAlg.SHA256: [16]}).encode()
        big = seal(tma, os.urandom(500), pcrs={HashAlg.SHA256: [16]}).encode()
        bound = bind(binding_public_key(tma), b"only on A", rng=os.urandom)
    with TmClient.open(b.tcti) as tmb:
        for blob in (sealed, big):
            with pytest.raises(VerificationError, match="sealed on another TM"):
                unseal(tmb, blob)
        with pytest.raises(VerificationError, match="bound for another TM"):
            unbind(tmb, bound)
        assert tmb.persistent_handles() == []  # trying A's blobs made no key on B
        seal(tmb, b"B's own", pcrs={HashAlg.SHA256: [16]})
        binding_public_key(tmb)
        with pytest.raises(VerificationError, match="sealed on another TM"):
            unseal(tmb, sealed)
        with pytest.raises(VerificationError, match="bound for another TM"):
            unbind(tmb, bound)
        assert_clean(tmb)


def _lockout_counter(tm) -> int:
    _, data = tm.esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.LOCKOUT_COUNTER, 1)
    prop = data.data.tpmProperties[0]
    assert prop.property == TPM2_PT.LOCKOUT_COUNTER
    return int(prop.value)


def test_orderly_restarts_keep_everything_usable(swtpm_factory):
    """With TPM2_Shutdown before each stop (what a vTM manager does) nothing counts towards DA."""
    proc = swtpm_factory()
    with TmClient.open(proc.tcti) as tm:
        blob = seal(tm, b"x", pcrs={HashAlg.SHA256: [23]})
        bound = bind(binding_public_key(tm), b"y", rng=os.urandom)
    for _ in range(4):
        proc = restart(swtpm_factory, proc, orderly=True)
        with TmClient.open(proc.tcti) as tm:
            assert unseal(tm, blob) == b"x"
            assert unbind(tm, bound) == b"y"
            assert _lockout_counter(tm) == 0


def test_binding_key_works_in_dictionary_attack_lockout(tm):
    """The binding key is noDA (empty authValue): a TM locked out by failed password attempts (or by
    unorderly shutdowns after using DA-protected keys) still unbinds. The SRK has tpm2-tools'
    default attributes, without noDA: sealing waits for the lockout to end."""
    blob = seal(tm, b"sealed", pcrs={HashAlg.SHA256: [23]})
    bound = bind(binding_public_key(tm), b"bound", rng=os.urandom)
    e = tm.esapi
    template = TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256",
        objectAttributes=TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.SIGN_ENCRYPT,
    )
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(b"right")))
    key = e.create_primary(sensitive, template, ESYS_TR.OWNER)[0]
    try:
        e.tr_set_auth(key, b"wrong")
        for _ in range(3):  # swtpm's default maxTries
            with pytest.raises(TSS2_Exception, match="DA counter incremented|lockout"):
                e.sign(key, TPM2B_DIGEST(bytes(32)), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    finally:
        e.flush_context(key)
    assert _lockout_counter(tm) == 3
    assert unbind(tm, bound) == b"bound"
    with pytest.raises(TmError, match="lockout") as err:
        unseal(tm, blob)
    assert err.value.rc == 0x921  # TPM_RC_LOCKOUT
    assert_clean(tm)
