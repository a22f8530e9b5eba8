"""An append-only Merkle tree as RFC 9162 (Certificate Transparency v2) §2.1
defines it: leaf hash SHA-256(0x00 ‖ entry), node hash SHA-256(0x01 ‖ left ‖
right), a tree of n leaves split at the largest power of two below n.

Why by hand: the key service's log needs three things that a library would
have to be wrapped around anyway (docs/keyservice.md, "The log"): an
incremental right frontier (so appending costs O(log n) and start-up need not
re-walk history), proofs built from *stored* perfect-subtree hashes (so the
store can fetch exactly the O(log n) nodes a proof needs, in one query), and
verification that raises one exception kind. It is tested against RFC 9162's
definitions by an independent implementation and published vectors
(tests/unit/test_merkle.py).

Addressing: `(level, index)` names the perfect subtree over leaves
[index·2^level, (index+1)·2^level). Every node a proof needs is such a
subtree or is computed from them (`subtree_hash`), so a store keeps only
those, written once when they complete and never changed.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

from .errors import IntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeGetter = Callable[[int, int], bytes]


class ProofError(IntegrityError):
    """A proof that does not verify: the log's history is not what was claimed."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (a direct transcription of the RFC's recursion)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


# --- the right frontier ----------------------------------------------------------
class Frontier:
    """The roots of the perfect subtrees that make up a tree of `size` leaves,
    largest (leftmost) first: what appending needs, O(log n) hashes."""

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise IntegrityError(f"a frontier of {size} leaves has {bin(max(size, 0)).count('1')} hashes, "
                                 f"not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns every perfect subtree it completes as
        (level, index, hash), the leaf itself first (level 0)."""
        index = self.size
        done = [(0, index, leaf)]
        h, level = leaf, 0
        while (index >> level) & 1:  # a left sibling of the same height waits on the frontier
            h = node_hash(self.hashes.pop(), h)
            level += 1
            done.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return done

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def positions(self) -> list[tuple[int, int]]:
        """(level, index) of each frontier hash, in order."""
        out, start = [], 0
        for level in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> level & 1:
                out.append((level, start >> level))
                start += 1 << level
        return out

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Frontier:
        if len(raw) < 8 or (len(raw) - 8) % HASH_SIZE:
            raise IntegrityError("a stored log frontier is malformed")
        size = int.from_bytes(raw[:8], "big")
        return cls(size, [raw[i:i + HASH_SIZE] for i in range(8, len(raw), HASH_SIZE)])


# --- proofs from stored perfect subtrees -------------------------------------------
def subtree_hash(lo: int, hi: int, get: NodeGetter) -> bytes:
    """MTH(D[lo:hi]) for a range whose start is aligned as the RFC's recursion
    aligns it, from perfect subtrees only."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        return get(level, lo >> level)
    k = _split(n)
    return node_hash(subtree_hash(lo, lo + k, get), subtree_hash(lo + k, hi, get))


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return path(m, lo, lo + k) + [subtree_hash(lo + k, hi, get)]
        return path(m - k, lo + k, hi) + [subtree_hash(lo, lo + k, get)]

    return path(index, 0, size)


def consistency_proof(first: int, second: int, get: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[0:second]); empty when first is 0 or equal."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    if first == 0 or first == second:
        return []

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [subtree_hash(lo, hi, get)]
        k = _split(n)
        if m <= k:
            return sub(m, lo, lo + k, whole) + [subtree_hash(lo + k, hi, get)]
        return sub(m - k, lo + k, hi, False) + [subtree_hash(lo, lo + k, get)]

    return sub(first, 0, second, True)


def nodes_needed(proof: Callable[[NodeGetter], object]) -> list[tuple[int, int]]:
    """The stored subtrees a proof reads, so a store can fetch them in one query:
    `nodes_needed(lambda get: inclusion_proof(i, n, get))`."""
    seen: dict[tuple[int, int], None] = {}

    def record(level: int, index: int) -> bytes:
        seen[(level, index)] = None
        return bytes(HASH_SIZE)

    proof(record)
    return list(seen)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -----------------------------------
def _check_hashes(proof: Iterable[bytes]) -> list[bytes]:
    out = list(proof)
    if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in out):
        raise ProofError("a proof element is not a 32-byte hash")
    return out


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` places `leaf` under; ProofError if it cannot."""
    proof = _check_hashes(proof)
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise ProofError("the leaf is not a 32-byte hash")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} leaves with that root")


def roots_from_consistency(first: int, second: int, first_root: bytes,
                           proof: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(root of the first tree, root of the second) that `proof` implies, given the
    first tree's root (used when first is a power of two); ProofError if malformed."""
    proof = _check_hashes(proof)
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    if first == second:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        return first_root, first_root
    if not proof:
        raise ProofError("the consistency proof is empty")
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    return fr, sr


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """The tree of `second` leaves with `second_root` extends the tree of `first`
    leaves with `first_root`; ProofError otherwise (a fork, or a rewritten past)."""
    if first == 0:
        # Every tree extends the empty one, whose only root is MTH({}) = SHA-256()
        # (RFC 9162 §2.1.1); two different roots of size 0 are a fork like any other.
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        if second < 0 or first_root != EMPTY_ROOT or (second == 0 and second_root != EMPTY_ROOT):
            raise ProofError("the empty tree's root is the hash of nothing")
        return
    fr, sr = roots_from_consistency(first, second, first_root, proof)
    if fr != first_root or sr != second_root:
        raise ProofError(f"the tree of {second} leaves does not extend the tree of {first} leaves")
