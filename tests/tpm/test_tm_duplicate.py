"""TPM2_Duplicate on one swtpm, TPM2_Import on another; and a software wrap to a TM's SRK."""

from __future__ import annotations

import os

import pytest

from vroot.errors import InvalidInput, TmError, TmPolicyFailed
from vroot.tm import DUPLICATE_POLICY, PolicyCommandCode, PolicyPcr
from vroot.tm._policy import policy_digest
from vroot.tm.client import DuplicationBlob, TmClient, wrap_sealed
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

DATA = b"vTPM state key " + bytes(range(17))


@pytest.fixture
def two(swtpm_factory):
    a, b = swtpm_factory(name="a"), swtpm_factory(name="b")
    with TmClient.open(a.tcti) as tma, TmClient.open(b.tcti) as tmb:
        yield tma, tmb
        assert tma.transient_handles() == [] and tma.session_handles() == []
        assert tmb.transient_handles() == [] and tmb.session_handles() == []


@pytest.mark.parametrize("kind_b", ["ecc", "rsa"])
@pytest.mark.parametrize("inner_wrap", [True, False])
def test_duplicate_to_another_tpm_and_unseal(two, kind_b, inner_wrap):
    tma, tmb = two
    with tmb.create_srk(kind_b) as srk_b:
        srk_b_public = srk_b.public
    with tma.create_srk() as srk_a:
        blob = tma.seal_for_duplication(srk_a, DATA)
        assert tma.unseal(srk_a, blob) == DATA  # usable on the source too
        with tma.load(srk_a, blob) as obj:
            dup = tma.duplicate(obj, srk_b_public, policy=DUPLICATE_POLICY, inner_wrap=inner_wrap)
    assert isinstance(dup, DuplicationBlob) and "bytes>" in repr(dup)
    assert (dup.encryption_key != b"\x00\x00") == inner_wrap
    with tmb.create_srk(kind_b) as srk_b:  # recreated: the same primary from the same seed
        assert srk_b.public == srk_b_public
        imported = tmb.import_(srk_b, blob.public, dup)
        assert imported.public == blob.public
        assert tmb.unseal(srk_b, imported) == DATA


def test_duplicate_needs_the_policy_and_a_duplicable_object(two):
    tma, tmb = two
    with tmb.create_srk() as srk_b:
        srk_b_public = srk_b.public
    with tma.create_srk() as srk_a:
        dup_blob = tma.seal_for_duplication(srk_a, DATA)
        with tma.load(srk_a, dup_blob) as obj:
            with pytest.raises(TmPolicyFailed):  # a policy for another command
                tma.duplicate(obj, srk_b_public, policy=[PolicyCommandCode(0x15D)])
        fixed = tma.seal(srk_a, DATA, policy_digest=bytes(32))
        with tma.load(srk_a, fixed) as obj:
            with pytest.raises(TmError):  # fixedTPM/fixedParent objects never leave
                tma.duplicate(obj, srk_b_public, policy=DUPLICATE_POLICY)
        with pytest.raises(InvalidInput):
            tma.duplicate(obj, b"\x00\x01", policy=DUPLICATE_POLICY)
        assert tma.transient_handles() == [srk_a.handle]


def test_import_to_the_wrong_parent_fails(two, swtpm_factory):
    tma, tmb = two
    c = swtpm_factory(name="c")
    with TmClient.open(c.tcti) as tmc, tmc.create_srk() as srk_c:
        srk_c_public = srk_c.public
    with tma.create_srk() as srk_a:
        blob = tma.seal_for_duplication(srk_a, DATA)
        with tma.load(srk_a, blob) as obj:
            dup = tma.duplicate(obj, srk_c_public, policy=DUPLICATE_POLICY)
    with tmb.create_srk() as srk_b, pytest.raises(TmError):
        tmb.import_(srk_b, blob.public, dup)


def test_software_wrap_to_srk(tm):
    with tm.create_srk() as srk:
        public, blob = wrap_sealed(srk.public, DATA)
        imported = tm.import_(srk, public, blob)
        assert tm.unseal(srk, imported) == DATA


def test_software_wrap_with_pcr_policy(tm):
    sel = {HashAlg.SHA256: [16]}
    with tm.create_srk() as srk:
        policy = policy_digest([PolicyPcr.of(sel)], tm.pcr_read(sel))
        public, blob = wrap_sealed(srk.public, DATA, policy_digest=policy, inner_wrap=False)
        imported = tm.import_(srk, public, blob)
        assert tm.unseal(srk, imported, pcrs=sel) == DATA
        tm.pcr_extend(16, {HashAlg.SHA256: os.urandom(32)})
        with pytest.raises(TmPolicyFailed):
            tm.unseal(srk, imported, pcrs=sel)


def test_software_wrap_to_rsa_srk(tm):
    with tm.create_srk("rsa") as srk:
        public, blob = wrap_sealed(srk.public, DATA)
        assert tm.unseal(srk, tm.import_(srk, public, blob)) == DATA


def test_wrap_bad_inputs(tm):
    with tm.create_srk() as srk:
        with pytest.raises(InvalidInput):
            wrap_sealed(srk.public, b"x" * 200)
        with pytest.raises(InvalidInput):
            wrap_sealed(b"junk", DATA)
