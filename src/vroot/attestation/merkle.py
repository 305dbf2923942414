"""Merkle trees for deep-quote batching (DESIGN.md section 5; VMM-F5, RA-4).

One host quote vouches for many VM quotes at once: each VM challenge i becomes a leaf
`deep_quote_leaf(n_i, vtm_quote_i) = SHA-256(n_i ‖ SHA-256(vtm_quote_i))`, the host quotes with
qualifying data `merkle_root(leaves)` (32 bytes, within TPM2B_DATA's limit), and each VM's verifier
gets an `inclusion_proof` that leads from its leaf to that root.

The tree is RFC 6962's Merkle Tree Hash (RFC 9162 section 2.1.1), with SHA-256:
    leaf hash  = SHA-256(0x00 ‖ leaf)        node hash = SHA-256(0x01 ‖ left ‖ right)
    MTH(D[n])  = MTH(D[0:k]) and MTH(D[k:n]) joined, k the largest power of two < n.
An odd count is handled by that split, not by duplicating the last leaf: bottom-up, a node without
a sibling moves up a level unchanged. So no two different leaf lists have the same root (the
duplication flaw of Bitcoin's tree, CVE-2012-2459, does not arise), and leaves cannot pass as
nodes (domain separation). A tree has 1..MAX_LEAVES leaves; the empty tree is refused, since a
deep quote over no VM proves nothing.

    leaves = [deep_quote_leaf(nonce_i, quote_i) for ...]
    root = merkle_root(leaves)                   # -> host quote qualifying data
    proof = inclusion_proof(leaves, i)
    verify_inclusion(leaves[i], index=i, count=len(leaves), proof=proof, root=root)  # or raises

Pure: hashlib only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from vroot.errors import InvalidInput, MerkleProofInvalid

__all__ = [
    "HASH_SIZE",
    "MAX_LEAVES",
    "MAX_PROOF_LENGTH",
    "deep_quote_leaf",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_inclusion",
]

HASH_SIZE = 32
MAX_LEAVES = 1 << 20  # far above the VMs one host runs; bounds the work of a root
MAX_PROOF_LENGTH = 20  # ceil(log2(MAX_LEAVES))
MAX_LEAF_BYTES = 1 << 16


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 ‖ leaf)."""
    return _sha256(b"\x00" + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(b"\x01" + left + right)


def deep_quote_leaf(nonce: bytes, vtm_quote: bytes) -> bytes:
    """SHA-256(nonce ‖ SHA-256(vtm_quote)): the leaf of one VM challenge. The inner hash has a fixed
    size, so (nonce, quote) pairs cannot be re-split to give the same leaf. `vtm_quote` is the
    vTM's TPMS_ATTEST as signed (the bytes the VM's verifier checks)."""
    nonce = _as_bytes(nonce, "nonce")
    vtm_quote = _as_bytes(vtm_quote, "vTM quote")
    if not nonce:
        raise InvalidInput("deep-quote leaf: empty nonce")
    return _sha256(nonce + _sha256(vtm_quote))


def _leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    if isinstance(leaves, bytes | bytearray | memoryview | str):
        raise InvalidInput("leaves must be a sequence of byte strings, not one string")
    n = len(leaves)
    if not 0 < n <= MAX_LEAVES:
        raise InvalidInput(f"a Merkle tree has 1..{MAX_LEAVES} leaves, got {n}")
    out = []
    for i, leaf in enumerate(leaves):
        leaf = _as_bytes(leaf, f"leaf {i}")
        if len(leaf) > MAX_LEAF_BYTES:
            raise InvalidInput(f"leaf {i} is {len(leaf)} bytes, more than {MAX_LEAF_BYTES}")
        out.append(leaf_hash(leaf))
    return out


def _up(level: list[bytes]) -> list[bytes]:
    """The next level: pairs hashed, a last node without a sibling carried up unchanged."""
    nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash (SHA-256) of 1..MAX_LEAVES leaves: 32 bytes."""
    level = _leaf_hashes(leaves)
    while len(level) > 1:
        level = _up(level)
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The audit path of leaf `index` (RFC 6962 PATH(m, D[n])): sibling hashes from the leaf up."""
    level = _leaf_hashes(leaves)
    if not isinstance(index, int) or not 0 <= index < len(level):
        raise InvalidInput(f"leaf index {index!r} outside 0..{len(level) - 1}")
    proof = []
    i = index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _up(level)
        i //= 2
    return tuple(proof)


def verify_inclusion(leaf: bytes, *, index: int, count: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf` is leaf `index` of a `count`-leaf tree whose root is `root` (RFC 9162 2.1.3.2).

    Proves: the holder of `root` committed to `leaf` at that position (so, with the host quote's
    qualifying data as `root`, the host TM quoted after this VM's challenge was made).
    Does not prove: anything about the other leaves, or that `root` was quoted: caller must take
    `root` from a verified host quote and `leaf` from `deep_quote_leaf` of its own nonce and the
    vTM quote it verified. An RFC 6962 root does not commit to `count` by itself (a signed tree
    head carries it beside the root): a proof can pass under two counts whose trees give that
    leaf the same path, and it proves the leaf's inclusion either way. Raises
    `MerkleProofInvalid`, or `InvalidInput` for malformed arguments.
    """
    leaf = _as_bytes(leaf, "leaf")
    root = _as_bytes(root, "root")
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or isinstance(count, bool)
        or not isinstance(count, int)
    ):
        raise InvalidInput("index and count must be integers")
    if not 0 < count <= MAX_LEAVES:
        raise InvalidInput(f"count {count} outside 1..{MAX_LEAVES}")
    if isinstance(proof, bytes | bytearray | memoryview | str):
        raise InvalidInput("proof must be a sequence of 32-byte hashes, not one string")
    if len(proof) > MAX_PROOF_LENGTH:
        raise MerkleProofInvalid(f"proof of {len(proof)} hashes is longer than any tree allows")
    path = [_as_bytes(p, f"proof[{i}]") for i, p in enumerate(proof)]
    for i, p in enumerate(path):
        if len(p) != HASH_SIZE:
            raise MerkleProofInvalid(f"proof[{i}] is {len(p)} bytes, want {HASH_SIZE}")
    if len(root) != HASH_SIZE:
        raise MerkleProofInvalid(f"root is {len(root)} bytes, want {HASH_SIZE}")
    if not 0 <= index < count:
        raise MerkleProofInvalid(f"leaf index {index} is outside a tree of {count} leaves")
    fn, sn = index, count - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0:
            raise MerkleProofInvalid(f"proof has more hashes than leaf {index} of {count} needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofInvalid(f"proof has fewer hashes than leaf {index} of {count} needs")
    if not hmac.compare_digest(r, root):
        raise MerkleProofInvalid(f"proof for leaf {index} of {count} does not lead to the root")
