"""Deep attestation of VMs (RA-3, RA-4, RA-7): one host deep quote per batch of VMs, each VM bound
by a Merkle inclusion proof, and the attacks that must fail."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime

import pytest
from vtm_helpers import make_host

from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence, verify_quote
from vroot.attestation.deep import joint_verdict, verify_vm_binding
from vroot.attestation.merkle import deep_quote_leaf, inclusion_proof, merkle_root
from vroot.errors import CertificateInvalid, MerkleProofInvalid
from vroot.host import load_host_keys
from vroot.pki import verify_vek_certificate
from vroot.tpm2 import HashAlg, parse_public

pytestmark = pytest.mark.tpm
SEL = {HashAlg.SHA256: range(10)}


def _vm_quote(agent, vm: str, nonce: bytes):  # noqa: ANN001, ANN202
    """What a guest attester sends: a quote of its vTM with a vAK, and the vPCR values."""
    with agent.agent.manager.open_vtm(vm) as vtm, vtm.create_primary_ek("ecc") as ek:
        with vtm.load(ek, vtm.create_ak(ek, "ecc")) as vak:
            attest, signature = vtm.quote(vak, SEL, nonce)
            return attest, signature, vak.public, vtm.pcr_read(SEL)


def _vek_manager(agent, vm: str) -> bytes:  # noqa: ANN001
    der = base64.b64decode(agent.client.call("POST", f"/v1/vtms/{vm}/certificate")["der"])
    manager = parse_public(load_host_keys(agent.paths).manager_public)
    return verify_vek_certificate(
        der, manager_public=manager, now=datetime.now(UTC), vm_uuid=uuid.UUID(vm)
    ).manager_name


def _deep(agent, root: bytes):  # noqa: ANN001, ANN202
    doc = agent.client.call("POST", "/v1/deep-quote", {"qualifying_data": root.hex()})
    return verify_host_evidence(UnverifiedHostEvidence.from_json(doc), qualifying_data=root)


def test_one_deep_quote_vouches_for_a_batch_of_vms(agent):
    vms = [str(uuid.uuid4()) for _ in range(3)]
    for vm in vms:
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    nonces = {vm: os.urandom(32) for vm in vms}
    quotes = {vm: _vm_quote(agent, vm, nonces[vm]) for vm in vms}
    leaves = [deep_quote_leaf(nonces[vm], quotes[vm][0]) for vm in vms]
    host = _deep(agent, merkle_root(leaves))
    for i, vm in enumerate(vms):
        attest, signature, vak, pcrs = quotes[vm]
        verify_quote(attest, signature, parse_public(vak), nonce=nonces[vm], pcrs=pcrs)
        binding = verify_vm_binding(nonce=nonces[vm], vtm_quote_attest=attest, leaf_index=i, leaf_count=len(vms),
                                    proof=inclusion_proof(leaves, i), host=host,
                                    vek_manager_name=_vek_manager(agent, vm))  # fmt: skip
        verdict = joint_verdict(vm_trusted=True, host_trusted=True, binding=binding)
        assert verdict.trusted and verdict.host_id == "host-a"


def test_replayed_nonce_is_not_in_the_tree(agent):
    """RA-7: an old vTM quote (another nonce) presented for a new challenge is not in the signed tree."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    old, new = os.urandom(32), os.urandom(32)
    old_quote = _vm_quote(agent, vm, old)[0]
    new_quote = _vm_quote(agent, vm, new)[0]
    leaves = [deep_quote_leaf(new, new_quote), deep_quote_leaf(os.urandom(32), b"other vm")]
    host = _deep(agent, merkle_root(leaves))
    with pytest.raises(MerkleProofInvalid):
        verify_vm_binding(nonce=new, vtm_quote_attest=old_quote, leaf_index=0, leaf_count=2,
                          proof=inclusion_proof(leaves, 0), host=host, vek_manager_name=_vek_manager(agent, vm))  # fmt: skip


def test_quote_relayed_from_another_host_is_refused(agent, agent_factory, short_tmp):
    """RA-7: a VM on host B answers for a VM claimed to be on host A. Its leaf is not in A's tree;
    and if A's agent relays it into A's batch, its vEK names B's vTM-manager key, not A's."""
    other = agent_factory(make_host(short_tmp, "host-b"))
    vm_b = str(uuid.uuid4())
    other.client.call("POST", "/v1/vtms", {"vm_uuid": vm_b})
    nonce = os.urandom(32)
    quote_b = _vm_quote(other, vm_b, nonce)[0]
    manager_b = _vek_manager(other, vm_b)
    honest_leaves = [deep_quote_leaf(os.urandom(32), b"a vm of host-a")]
    host_a = _deep(agent, merkle_root(honest_leaves))
    with pytest.raises(MerkleProofInvalid):
        verify_vm_binding(nonce=nonce, vtm_quote_attest=quote_b, leaf_index=0, leaf_count=1,
                          proof=inclusion_proof(honest_leaves, 0), host=host_a, vek_manager_name=manager_b)  # fmt: skip
    relayed = [deep_quote_leaf(nonce, quote_b)]
    host_a = _deep(agent, merkle_root(relayed))
    with pytest.raises(CertificateInvalid, match="not on this host"):
        verify_vm_binding(nonce=nonce, vtm_quote_attest=quote_b, leaf_index=0, leaf_count=1,
                          proof=inclusion_proof(relayed, 0), host=host_a, vek_manager_name=manager_b)  # fmt: skip


def test_untrusted_host_makes_its_vms_untrusted(agent):
    """RA-4: a VM that looks fine on an untrusted host is not trusted."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    nonce = os.urandom(32)
    attest = _vm_quote(agent, vm, nonce)[0]
    leaves = [deep_quote_leaf(nonce, attest)]
    host = _deep(agent, merkle_root(leaves))
    binding = verify_vm_binding(nonce=nonce, vtm_quote_attest=attest, leaf_index=0, leaf_count=1,
                                proof=inclusion_proof(leaves, 0), host=host, vek_manager_name=_vek_manager(agent, vm))  # fmt: skip
    verdict = joint_verdict(vm_trusted=True, host_trusted=False, binding=binding)
    assert not verdict.trusted and verdict.reasons == ("its host host-a does not appraise as trusted",)
