"""Deep-quote batching trees (vroot.attestation.merkle; DESIGN.md section 5, VMM-F5, RA-4)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.attestation import deep_quote_leaf, inclusion_proof, merkle_root, verify_inclusion
from vroot.attestation.merkle import MAX_PROOF_LENGTH, leaf_hash, node_hash
from vroot.errors import InvalidInput, MerkleProofInvalid

# RFC 6962 reference leaves and tree heads (certificate-transparency test vectors, also in trillian
# and RFC 9162's reference implementations).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PROOFS = {
    0: [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    5: [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, word for word: split at the largest power of two below n."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_match_rfc6962_vectors(n: int) -> None:
    assert merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize("index", sorted(CT_PROOFS))
def test_inclusion_proofs_match_rfc6962_vectors(index: int) -> None:
    proof = inclusion_proof(CT_LEAVES, index)
    assert [p.hex() for p in proof] == CT_PROOFS[index]
    verify_inclusion(CT_LEAVES[index], index=index, count=8, proof=proof, root=bytes.fromhex(CT_ROOTS[7]))


def test_deep_quote_leaf_is_hash_of_nonce_and_quote_hash() -> None:
    nonce, quote = b"\x11" * 32, b"attest bytes"
    want = hashlib.sha256(nonce + hashlib.sha256(quote).digest()).digest()
    assert deep_quote_leaf(nonce, quote) == want
    assert len(merkle_root([want])) == 32  # fits a quote's qualifying data
    with pytest.raises(InvalidInput, match="empty nonce"):
        deep_quote_leaf(b"", quote)


def test_odd_count_carries_the_last_node_up_rather_than_duplicating_it() -> None:
    """CVE-2012-2459 shape: [a, b, c] and [a, b, c, c] must not share a root."""
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a, b, c]) == node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_leaf_cannot_pass_as_node() -> None:
    """Domain separation: a two-leaf tree's root is not the leaf hash of its concatenated children."""
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert merkle_root([a + b]) != merkle_root([b"a", b"b"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=70), st.data())
def test_every_proof_of_a_random_tree_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    assert root == reference_mth(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    verify_inclusion(leaves[index], index=index, count=len(leaves), proof=proof, root=root)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=16), min_size=2, max_size=40, unique=True), st.data())
def test_random_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = list(inclusion_proof(leaves, index))
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index))
    with pytest.raises(MerkleProofInvalid):  # another leaf at this position
        verify_inclusion(leaves[other], index=index, count=n, proof=proof, root=root)
    with pytest.raises(MerkleProofInvalid):  # this leaf claimed at another position
        verify_inclusion(leaves[index], index=other, count=n, proof=proof, root=root)
    k = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(proof)
    bad[k] = bad[k][: bit // 8] + bytes([bad[k][bit // 8] ^ (1 << (bit % 8))]) + bad[k][bit // 8 + 1 :]
    with pytest.raises(MerkleProofInvalid):
        verify_inclusion(leaves[index], index=index, count=n, proof=bad, root=root)


# -- one negative test per step --------------------------------------------------------------------

LEAVES = [bytes([i]) * 3 for i in range(7)]
ROOT = merkle_root(LEAVES)


def test_wrong_index_fails() -> None:
    proof = inclusion_proof(LEAVES, 2)
    with pytest.raises(MerkleProofInvalid, match="does not lead to the root"):
        verify_inclusion(LEAVES[2], index=3, count=7, proof=proof, root=ROOT)


def test_index_outside_tree_fails() -> None:
    with pytest.raises(MerkleProofInvalid, match="outside a tree of 7"):
        verify_inclusion(LEAVES[2], index=7, count=7, proof=inclusion_proof(LEAVES, 2), root=ROOT)


def test_wrong_count_fails() -> None:
    proof = inclusion_proof(LEAVES, 6)  # the lone last leaf: 2 hashes in a tree of 7
    with pytest.raises(MerkleProofInvalid, match="fewer hashes"):
        verify_inclusion(LEAVES[6], index=6, count=8, proof=proof, root=ROOT)
    with pytest.raises(MerkleProofInvalid, match="more hashes"):
        verify_inclusion(LEAVES[4], index=4, count=6, proof=inclusion_proof(LEAVES, 4), root=ROOT)


def test_count_is_not_committed_by_the_root_alone() -> None:
    """Documented limit: leaf 2 has the same path shape in trees of 6 and 7, so its proof passes under
    both counts (it is included either way); the count must come with the root from a trusted source."""
    verify_inclusion(LEAVES[2], index=2, count=6, proof=inclusion_proof(LEAVES, 2), root=ROOT)


def test_altered_proof_fails() -> None:
    proof = list(inclusion_proof(LEAVES, 4))
    proof[1] = bytes([proof[1][0] ^ 1]) + proof[1][1:]
    with pytest.raises(MerkleProofInvalid, match="does not lead to the root"):
        verify_inclusion(LEAVES[4], index=4, count=7, proof=proof, root=ROOT)


def test_extra_or_missing_proof_hash_fails() -> None:
    proof = list(inclusion_proof(LEAVES, 4))
    with pytest.raises(MerkleProofInvalid, match="more hashes"):
        verify_inclusion(LEAVES[4], index=4, count=7, proof=[*proof, bytes(32)], root=ROOT)
    with pytest.raises(MerkleProofInvalid, match="fewer hashes"):
        verify_inclusion(LEAVES[4], index=4, count=7, proof=proof[:-1], root=ROOT)
    with pytest.raises(MerkleProofInvalid, match="longer than any tree"):
        verify_inclusion(LEAVES[4], index=4, count=7, proof=[bytes(32)] * (MAX_PROOF_LENGTH + 1), root=ROOT)
    with pytest.raises(MerkleProofInvalid, match="want 32"):
        verify_inclusion(LEAVES[4], index=4, count=7, proof=[proof[0][:31], *proof[1:]], root=ROOT)


def test_altered_leaf_fails() -> None:
    with pytest.raises(MerkleProofInvalid, match="does not lead to the root"):
        verify_inclusion(b"\x04\x04\x05", index=4, count=7, proof=inclusion_proof(LEAVES, 4), root=ROOT)


def test_proof_of_another_tree_fails() -> None:
    other = [*LEAVES[:6], b"another VM"]
    proof = inclusion_proof(other, 1)
    verify_inclusion(other[1], index=1, count=7, proof=proof, root=merkle_root(other))
    with pytest.raises(MerkleProofInvalid, match="does not lead to the root"):
        verify_inclusion(other[1], index=1, count=7, proof=proof, root=ROOT)


def test_root_of_wrong_size_fails() -> None:
    with pytest.raises(MerkleProofInvalid, match="root is 31 bytes"):
        verify_inclusion(LEAVES[0], index=0, count=7, proof=inclusion_proof(LEAVES, 0), root=ROOT[:31])


def test_single_leaf_tree() -> None:
    assert inclusion_proof([b"x"], 0) == ()
    verify_inclusion(b"x", index=0, count=1, proof=(), root=merkle_root([b"x"]))
    with pytest.raises(MerkleProofInvalid, match="more hashes"):
        verify_inclusion(b"x", index=0, count=1, proof=[bytes(32)], root=merkle_root([b"x"]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: merkle_root([]), "1..1048576 leaves"),
        (lambda: merkle_root(b"abc"), "not one string"),
        (lambda: merkle_root(["text"]), "leaf 0 must be bytes"),
        (lambda: inclusion_proof(LEAVES, 7), "outside 0..6"),
        (lambda: inclusion_proof(LEAVES, -1), "outside 0..6"),
        (lambda: verify_inclusion(LEAVES[0], index=0, count=0, proof=(), root=ROOT), "count 0"),
        (lambda: verify_inclusion(LEAVES[0], index=True, count=7, proof=(), root=ROOT), "integers"),
        (lambda: verify_inclusion(LEAVES[0], index=0, count=7, proof=bytes(64), root=ROOT), "not one string"),
    ],
)
def test_bad_arguments_are_invalid_input(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInput, match=match):
        call()
