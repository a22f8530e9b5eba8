"""The log's Merkle tree (sesemi/merkle.py) against RFC 9162 §2.1:

- known-answer vectors published with Certificate Transparency's Go
  implementation (transparency-dev/merkle, formerly part of Trillian and
  certificate-transparency-go): the 8-leaf test tree's roots, perfect
  subtrees and right frontiers, inclusion and consistency proofs, the storage
  nodes each proof reads, and the repository's golden probes (good and bad
  proofs, tests/fixtures/merkle/);
- an independent second implementation written here from the RFC's recursive
  definitions (MTH, PATH, PROOF/SUBPROOF over a list of entries, and
  verifiers that undo those recursions), compared with the module on every
  small tree and on random trees of a few hundred leaves;
- refusals: every flipped byte, wrong index or size, truncated or extended
  proof, and every fork (a second tree that does not extend the first) at an
  equal, larger or smaller size raise ProofError;
- proofs at 10^7 leaves stay within 1 KiB (the log's goal,
  docs/keyservice.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesemi import merkle
from sesemi.errors import IntegrityError
from sesemi.merkle import Frontier, ProofError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "merkle"

# No example database (nothing written to the work tree), no deadline (a shared
# 2-core machine), few examples: the whole file runs in about a second.
PROPS = settings(max_examples=80, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


# --- the published 8-leaf test tree -------------------------------------------------
# Data (hex strings only) from github.com/transparency-dev/merkle, Apache-2.0,
# Copyright Google LLC (tests/fixtures/merkle/LICENSE.transparency-dev-merkle):
# testonly/constants.go at commit 417fb0c314750d94e53942e9f92e79b6d35915db,
# LeafInputs(), NodeHashes() and RootHashes(). The same tree and values appear in
# certificate-transparency-go's merkletree tests and Trillian's.
LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]

# NODE_HASHES[level][index]: the perfect subtree over leaves [index·2^level, (index+1)·2^level).
NODE_HASHES = [[bytes.fromhex(h) for h in level] for level in (
    ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"],
    ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"],
    ["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
)]

# ROOTS[n]: the root of the tree of the first n leaves (ROOTS[0]: SHA-256 of nothing).
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]

# The right frontier of each size, as the same file's CompactTrees() lists it
# ((level, index) into NODE_HASHES, largest first).
COMPACT = [[], [(0, 0)], [(1, 0)], [(1, 0), (0, 2)], [(2, 0)], [(2, 0), (0, 4)], [(2, 0), (1, 2)],
           [(2, 0), (1, 2), (0, 6)], [(3, 0)]]

# proof/verify_test.go at commit 9ca563d3ac2bab915317cf153ed4f952f6e74c07 (the
# last before these moved to testdata/*.json): inclusionProofs (leaf index is
# 1-based there) and consistencyProofs over the tree above.
INCLUSION = [  # (0-based leaf index, tree size, proof)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (first size, second size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]

# The stored nodes each proof reads, as (level, index): proof/proof_test.go at
# commit 9cbab9a2bb9fcbd58eda77c569fa9b0dc9862a11, TestInclusion and
# TestConsistency (their compact.NewNodeID(level, index) lists; an entry they
# "rehash" is one proof element computed from several stored nodes, as
# merkle.subtree_hash computes it).
INCLUSION_NODES = [  # (tree size, leaf index, nodes)
    (1, 0, []), (2, 0, [(0, 1)]), (2, 1, [(0, 0)]), (3, 1, [(0, 0), (0, 2)]),
    (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)]), (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)]),
    (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)]), (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)]),
    (7, 4, [(0, 5), (0, 6), (2, 0)]), (7, 5, [(0, 4), (0, 6), (2, 0)]), (7, 6, [(1, 2), (2, 0)]),
    (4, 2, [(0, 3), (1, 0)]), (5, 3, [(0, 2), (1, 0), (0, 4)]), (6, 3, [(0, 2), (1, 0), (1, 2)]),
    (6, 4, [(0, 5), (2, 0)]),
    (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)]),
    (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)]),
    (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]
CONSISTENCY_NODES = [  # (first size, second size, nodes)
    (1, 2, [(0, 1)]), (1, 4, [(0, 1), (1, 1)]), (1, 6, [(0, 1), (1, 1), (1, 2)]), (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]), (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)]), (4, 7, [(0, 6), (1, 2)]),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]), (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    (1, 1, []), (2, 2, []), (3, 3, []), (4, 4, []), (5, 5, []), (7, 7, []), (8, 8, []),
    (2, 4, [(1, 1)]), (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]), (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]), (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)]),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)]),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)]),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]


def _hx(proof: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in proof]


def _store(leaf_hashes: list[bytes]) -> tuple[Frontier, dict[tuple[int, int], bytes], list[bytes]]:
    """What the key service keeps: every perfect subtree `Frontier.append` completes,
    and (here, for the tests) the root after each append."""
    f, nodes, roots = Frontier(), {}, [merkle.EMPTY_ROOT]
    for h in leaf_hashes:
        for level, index, node in f.append(h):
            assert (level, index) not in nodes, "a perfect subtree is completed once"
            nodes[(level, index)] = node
        roots.append(f.root())
    return f, nodes, roots


def _getter(nodes: dict[tuple[int, int], bytes], size: int) -> merkle.NodeGetter:
    """A node getter for the tree of `size` leaves: a proof for that size that asked
    for a node beyond it would be reading a later tree."""
    def get(level: int, index: int) -> bytes:
        assert (index + 1) << level <= size, f"node ({level}, {index}) is outside a tree of {size}"
        return nodes[(level, index)]
    return get


PUBLISHED = _store([merkle.leaf_hash(e) for e in LEAF_INPUTS])


def test_published_roots_for_every_size() -> None:
    assert merkle.EMPTY_ROOT == ROOTS[0] == Frontier().root()
    hashes = [merkle.leaf_hash(e) for e in LEAF_INPUTS]
    assert hashes == NODE_HASHES[0]
    assert PUBLISHED[2] == ROOTS
    assert [merkle.root_of(hashes[:n]) for n in range(9)] == ROOTS


def test_frontier_holds_the_published_compact_trees() -> None:
    f = Frontier()
    for n, leaf in enumerate([None, *NODE_HASHES[0]]):
        if leaf is not None:
            f.append(leaf)
        assert f.hashes == [NODE_HASHES[lv][ix] for lv, ix in COMPACT[n]], n
        assert f.positions() == COMPACT[n]


def test_append_completes_exactly_the_published_perfect_subtrees() -> None:
    assert PUBLISHED[1] == {(lv, ix): h for lv, level in enumerate(NODE_HASHES) for ix, h in enumerate(level)}


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    got = merkle.inclusion_proof(index, size, _getter(PUBLISHED[1], size))
    assert got == _hx(proof)
    merkle.verify_inclusion(NODE_HASHES[0][index], index, size, got, ROOTS[size])


@pytest.mark.parametrize("first,second,proof", CONSISTENCY)
def test_published_consistency_proofs(first: int, second: int, proof: list[str]) -> None:
    got = merkle.consistency_proof(first, second, _getter(PUBLISHED[1], second))
    assert got == _hx(proof)
    merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], got)
    assert merkle.roots_from_consistency(first, second, ROOTS[first], got) == (ROOTS[first], ROOTS[second])


@pytest.mark.parametrize("size,index,nodes", INCLUSION_NODES)
def test_inclusion_reads_the_published_storage_nodes(size: int, index: int, nodes: list) -> None:
    got = merkle.nodes_needed(lambda get: merkle.inclusion_proof(index, size, get))
    assert sorted(got) == sorted(nodes)


@pytest.mark.parametrize("first,second,nodes", CONSISTENCY_NODES)
def test_consistency_reads_the_published_storage_nodes(first: int, second: int, nodes: list) -> None:
    got = merkle.nodes_needed(lambda get: merkle.consistency_proof(first, second, get))
    assert sorted(got) == sorted(nodes)


# --- the golden probes: good proofs and their corruptions -----------------------------
PROBES = json.loads((FIXTURES / "transparency_dev_probes.json").read_text())

# The one published probe this API answers otherwise, by design: a consistency
# "proof" from the empty tree. transparency-dev/merkle now refuses it as
# meaningless; here every tree extends the empty one, so a witness that holds
# nothing yet (size 0, the empty tree's root) accepts its first checkpoint with
# an empty proof.
FROM_EMPTY_BY_DESIGN = {"testdata/consistency/additional/size1-is-zero-and-size2-is-not-zero.json"}


def _b(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def _outcome(fn: Callable[[], object]) -> bool:
    """True if refused with ProofError; any other exception fails the test."""
    try:
        fn()
    except ProofError:
        return True
    return False


@pytest.mark.parametrize("probe", PROBES["inclusion"], ids=lambda p: p["file"].removeprefix("testdata/"))
def test_published_inclusion_probe(probe: dict) -> None:
    refused = _outcome(lambda: merkle.verify_inclusion(
        _b(probe["leafHash"]), probe["leafIdx"], probe["treeSize"], [_b(h) for h in probe["proof"] or []],
        _b(probe["root"])))
    assert refused == probe["wantErr"], probe["desc"]


@pytest.mark.parametrize("probe", PROBES["consistency"], ids=lambda p: p["file"].removeprefix("testdata/"))
def test_published_consistency_probe(probe: dict) -> None:
    refused = _outcome(lambda: merkle.verify_consistency(
        probe["size1"], probe["size2"], _b(probe["root1"]), _b(probe["root2"]), [_b(h) for h in probe["proof"] or []]))
    if probe["file"] in FROM_EMPTY_BY_DESIGN:
        assert probe["size1"] == 0 and _b(probe["root1"]) == merkle.EMPTY_ROOT and not probe["proof"]
        assert not refused
        return
    assert refused == probe["wantErr"], probe["desc"]


def test_the_probe_set_is_whole() -> None:
    """The fixture holds what the source's tests run (a truncated copy would pass)."""
    assert len(PROBES["inclusion"]) == 98 and len(PROBES["consistency"]) == 98
    assert sum(not p["wantErr"] for p in PROBES["inclusion"] + PROBES["consistency"]) >= 10


# --- an independent implementation, straight from RFC 9162 §2.1 ---------------------
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (§2.1.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) over entries (not leaf hashes)."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _k(n)
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (§2.1.4.1)."""
    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [ref_mth(d)]
        k = _k(n)
        if m <= k:
            return subproof(m, d[:k], b) + [ref_mth(d[k:])]
        return subproof(m - k, d[k:], False) + [ref_mth(d[:k])]
    return subproof(m, d, True)


def ref_root_from_path(leaf: bytes, m: int, n: int, path: list[bytes]) -> bytes | None:
    """Undo PATH's recursion: the root a path implies, None if its length is wrong.
    (Not the RFC's §2.1.3.2 loop, which the module implements.)"""
    path = list(path)

    def up(m: int, n: int) -> bytes | None:
        if n == 1:
            return leaf
        if not path:
            return None
        k = _k(n)
        sibling = path.pop()  # PATH appends the top level's sibling last
        below = up(m, k) if m < k else up(m - k, n - k)
        if below is None:
            return None
        return _h(b"\x01" + below + sibling) if m < k else _h(b"\x01" + sibling + below)

    if not 0 <= m < n:
        return None
    root = up(m, n)
    return root if not path else None


def ref_roots_from_proof(m: int, n: int, first_root: bytes, proof: list[bytes]) -> tuple[bytes, bytes] | None:
    """Undo SUBPROOF's recursion: (old root, new root), None if the proof has the wrong shape."""
    proof = list(proof)

    def up(m: int, n: int, b: bool) -> tuple[bytes, bytes] | None:
        if m == n:
            if b:
                return first_root, first_root
            return (proof[-1], proof.pop()) if proof else None
        if not proof:
            return None
        k = _k(n)
        top = proof.pop()
        if m <= k:
            below = up(m, k, b)
            return None if below is None else (below[0], _h(b"\x01" + below[1] + top))
        below = up(m - k, n - k, False)
        return None if below is None else (_h(b"\x01" + top + below[0]), _h(b"\x01" + top + below[1]))

    if not 0 < m <= n:
        return None
    roots = up(m, n, True)
    return roots if not proof else None


# One log of distinct entries serves every size up to its length: the tree of n
# leaves is a prefix, and its perfect subtrees are among the log's.
ENTRIES = [b"entry %d" % i for i in range(400)]
LOG = _store([merkle.leaf_hash(e) for e in ENTRIES])


@lru_cache(maxsize=None)
def _ref_root(n: int) -> bytes:
    return ref_mth(ENTRIES[:n])


def _recorded(proof: Callable[[merkle.NodeGetter], list[bytes]], size: int) -> tuple[list[bytes], list]:
    reads: list[tuple[int, int]] = []
    get = _getter(LOG[1], size)

    def record(level: int, index: int) -> bytes:
        reads.append((level, index))
        return get(level, index)

    return proof(record), reads


def _check_tree(n: int, i: int, m: int) -> None:
    """Leaf i of the tree of n leaves, and the consistency of the tree of m with it."""
    d = ENTRIES[:n]
    assert LOG[2][n] == _ref_root(n)

    incl, reads = _recorded(lambda get: merkle.inclusion_proof(i, n, get), n)
    assert incl == ref_path(i, d)
    assert merkle.nodes_needed(lambda get: merkle.inclusion_proof(i, n, get)) == reads
    assert len(set(reads)) == len(reads)
    merkle.verify_inclusion(merkle.leaf_hash(d[i]), i, n, incl, LOG[2][n])
    assert ref_root_from_path(_h(b"\x00" + d[i]), i, n, incl) == LOG[2][n]

    cons, reads = _recorded(lambda get: merkle.consistency_proof(m, n, get), n)
    assert cons == (ref_proof(m, d) if m else [])  # the RFC defines PROOF for 0 < m <= n
    assert merkle.nodes_needed(lambda get: merkle.consistency_proof(m, n, get)) == reads
    assert len(set(reads)) == len(reads)
    merkle.verify_consistency(m, n, LOG[2][m], LOG[2][n], cons)
    if m:
        assert merkle.roots_from_consistency(m, n, LOG[2][m], cons) == (LOG[2][m], LOG[2][n])
        assert ref_roots_from_proof(m, n, LOG[2][m], cons) == (LOG[2][m], LOG[2][n])


def test_every_small_tree_matches_the_reference() -> None:
    """Every leaf and every earlier size of every tree up to 33 leaves (across the
    power-of-two boundaries 1, 2, 4, 8, 16, 32)."""
    for n in range(1, 34):
        for i in range(n):
            _check_tree(n, i, i)
        _check_tree(n, n - 1, n)


@PROPS
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(0, n))))
def test_random_trees_match_the_reference(nim: tuple[int, int, int]) -> None:
    _check_tree(*nim)


def test_references_agree_on_the_published_tree() -> None:
    """The second implementation reproduces the published vectors too."""
    assert [ref_mth(LEAF_INPUTS[:n]) for n in range(9)] == ROOTS
    for index, size, proof in INCLUSION:
        assert ref_path(index, LEAF_INPUTS[:size]) == _hx(proof)
    for first, second, proof in CONSISTENCY:
        assert ref_proof(first, LEAF_INPUTS[:second]) == _hx(proof)


# --- refusals -------------------------------------------------------------------------
def _flip(b: bytes, at: int, bit: int) -> bytes:
    out = bytearray(b)
    out[at % len(out)] ^= 1 << bit
    return bytes(out)


def _flip_in(proof: list[bytes], at: int, bit: int) -> list[bytes]:
    """One bit of one element flipped."""
    j = at % len(proof)
    return [*proof[:j], _flip(proof[j], at // len(proof), bit), *proof[j + 1:]]


_HASH = st.binary(min_size=32, max_size=32)


def _reshaped(kind: str, proof: list[bytes], data: st.DataObject) -> list[bytes] | None:
    """The proof truncated, extended or reordered; None where that cannot change it."""
    if kind == "extend":
        extra = data.draw(_HASH)
        return [*proof, extra] if data.draw(st.booleans()) else [extra, *proof]
    if kind == "truncate":
        return (proof[1:] if data.draw(st.booleans()) else proof[:-1]) if proof else None
    assert kind == "reorder", kind
    if len(set(proof)) < 2:
        return None
    return data.draw(st.permutations(proof).filter(lambda p: p != proof))


def _other(data: st.DataObject, lo: int, hi: int, not_: int) -> int:
    return data.draw(st.integers(lo, hi).filter(lambda x: x != not_))


def _reshapings(proof: list[bytes], data: st.DataObject, args: Callable[[list[bytes]], tuple]) -> dict:
    return {k: (lambda k=k: (lambda p: None if p is None else args(p))(_reshaped(k, proof, data)))
            for k in ("truncate", "extend", "reorder")}


def _refused(data: st.DataObject, tampered: dict[str, Callable[[], tuple | None]],
             verify: Callable[..., None], implied: Callable[[tuple], object]) -> tuple | None:
    """One tampering drawn from `tampered` (None where it cannot apply), refused by
    `verify`; for a proof of the wrong length, `implied` (the roots it implies)
    raises too (RFC 9162 §2.1.3.2, §2.1.4.2)."""
    kind = data.draw(st.sampled_from(sorted(tampered)))
    args = tampered[kind]()
    if not args:
        return None
    with pytest.raises(ProofError):
        verify(*args)
    if kind in ("truncate", "extend"):
        with pytest.raises(ProofError):
            implied(args)
    return args


@PROPS
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.data())
def test_tampered_inclusion_is_refused(ni: tuple[int, int], data: st.DataObject) -> None:
    n, i = ni
    leaf, root = merkle.leaf_hash(ENTRIES[i]), LOG[2][n]
    proof = merkle.inclusion_proof(i, n, _getter(LOG[1], n))
    at, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 7))
    size = _other(data, 0, 400, n)  # another checkpoint of the same log: its root binds its size
    tampered = {  # kind: (leaf, index, size, proof, root), None where the kind cannot apply
        "proof byte": lambda: proof and (leaf, i, n, _flip_in(proof, at, bit), root),
        "leaf byte": lambda: (_flip(leaf, at, bit), i, n, proof, root),
        "root byte": lambda: (leaf, i, n, proof, _flip(root, at, bit)),
        "index": lambda: (leaf, _other(data, -2, n + 2, i), n, proof, root),
        "size": lambda: (leaf, i, size, proof, LOG[2][size]),
        **_reshapings(proof, data, lambda p: (leaf, i, n, p, root)),
    }
    args = _refused(data, tampered, merkle.verify_inclusion, lambda a: merkle.root_from_inclusion(leaf, i, n, a[3]))
    if args and 0 <= args[1] < args[2]:
        # The independent verifier agrees that the tampered proof does not place this leaf under this root.
        assert ref_root_from_path(args[0], args[1], args[2], args[3]) != args[4]


@PROPS
@given(st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))), st.data())
def test_tampered_consistency_is_refused(nm: tuple[int, int], data: st.DataObject) -> None:
    n, m = nm
    proof = merkle.consistency_proof(m, n, _getter(LOG[1], n))
    at, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 7))
    first, second = _other(data, 1, 400, m), _other(data, 1, 400, n)  # other checkpoints of the same log
    tampered = {  # kind: (first, second, first root, second root, proof)
        "proof byte": lambda: (m, n, LOG[2][m], LOG[2][n], _flip_in(proof, at, bit)),
        "first root byte": lambda: (m, n, _flip(LOG[2][m], at, bit), LOG[2][n], proof),
        "second root byte": lambda: (m, n, LOG[2][m], _flip(LOG[2][n], at, bit), proof),
        "first": lambda: (first, n, LOG[2][first], LOG[2][n], proof),
        "second": lambda: (m, second, LOG[2][m], LOG[2][second], proof),
        **_reshapings(proof, data, lambda p: (m, n, LOG[2][m], LOG[2][n], p)),
    }
    args = _refused(data, tampered, merkle.verify_consistency,
                    lambda a: merkle.roots_from_consistency(m, n, LOG[2][m], a[4]))
    if args and 0 < args[0] <= args[1]:
        assert ref_roots_from_proof(args[0], args[1], args[2], args[4]) != (args[2], args[3])


@PROPS
@given(st.integers(1, 300).flatmap(lambda m: st.tuples(st.just(m), st.integers(0, m - 1))),
       st.integers(1, 100), st.sampled_from(["equal", "larger", "smaller"]))
def test_a_fork_is_refused(mj: tuple[int, int], grow: int, where: str) -> None:
    """The host restores or rewrites the log: a second tree B whose leaf j differs
    from leaf j of the tree A (size m) a witness holds. Whatever proof B's store
    or the honest log produces, the witness refuses B at an equal, larger or
    smaller size."""
    m, j = mj
    n = {"equal": m, "larger": m + grow, "smaller": max(0, m - grow)}[where]
    forked = list(ENTRIES[:max(m, n)])
    forked[j] = b"rewritten " + forked[j]
    _, b_nodes, b_roots = _store([merkle.leaf_hash(e) for e in forked])
    a_root, b_root = LOG[2][m], b_roots[n]
    candidates: list[list[bytes]] = [[], [a_root], [b_root]]
    if 0 < min(m, n) and m != n:
        lo, hi = min(m, n), max(m, n)
        candidates += [merkle.consistency_proof(lo, hi, _getter(b_nodes, hi)),  # B's own
                       merkle.consistency_proof(lo, hi, _getter(LOG[1], hi))]   # the honest log's
    for proof in candidates:
        with pytest.raises(ProofError):
            merkle.verify_consistency(m, n, a_root, b_root, proof)
        if m <= n and m:
            assert ref_roots_from_proof(m, n, a_root, proof) != (a_root, b_root)


def test_a_log_that_extends_the_first_is_not_a_fork() -> None:
    """The control for the fork test: rewriting a leaf past the first size is an extension."""
    forked = list(ENTRIES[:50])
    forked[45] = b"rewritten"
    _, nodes, roots = _store([merkle.leaf_hash(e) for e in forked])
    merkle.verify_consistency(40, 50, LOG[2][40], roots[50], merkle.consistency_proof(40, 50, _getter(nodes, 50)))


def test_the_empty_tree_has_one_root() -> None:
    """Size 0 is a checkpoint like any other: two different roots are a fork."""
    e, other = merkle.EMPTY_ROOT, bytes(32)
    merkle.verify_consistency(0, 0, e, e, [])
    merkle.verify_consistency(0, 5, e, LOG[2][5], [])
    for args in [(0, 0, e, other, []), (0, 0, other, other, []), (0, 5, other, LOG[2][5], []),
                 (0, 5, e, LOG[2][5], [e]), (0, -1, e, e, [])]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)


def test_verification_raises_only_proof_error_on_malformed_input() -> None:
    good = merkle.inclusion_proof(3, 10, _getter(LOG[1], 10))
    leaf = merkle.leaf_hash(ENTRIES[3])
    for bad in ([b"short"], [*good[:-1], "not bytes"], [bytearray(32)]):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf, 3, 10, bad, LOG[2][10])
        with pytest.raises(ProofError):
            merkle.verify_consistency(3, 10, LOG[2][3], LOG[2][10], bad)
    for leaf_bad in (b"", leaf[:31], leaf + b"\x00"):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf_bad, 3, 10, good, LOG[2][10])
    for first, second in [(-1, 5), (5, 4), (0, 3)]:
        with pytest.raises(ProofError):
            merkle.roots_from_consistency(first, second, LOG[2][3], [LOG[2][3]])
    assert issubclass(ProofError, IntegrityError)


def test_an_inclusion_proof_binds_the_root_not_the_size() -> None:
    """An RFC 9162 fact the log's clients must respect: the path for leaf 0 of 5 and
    of 6 leaves has the same shape, so it verifies against the size-5 root claimed
    with size 6. Only the checkpoint's signature binds a size to its root, so a
    receipt's size and root must come from one signed checkpoint."""
    proof = merkle.inclusion_proof(0, 5, _getter(LOG[1], 5))
    merkle.verify_inclusion(merkle.leaf_hash(ENTRIES[0]), 0, 6, proof, LOG[2][5])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(ENTRIES[0]), 0, 6, proof, LOG[2][6])


def test_proof_requests_outside_the_tree_are_refused() -> None:
    get = _getter(LOG[1], 8)
    for index, size in [(0, 0), (8, 8), (-1, 8), (9, 8)]:
        with pytest.raises(ValueError):
            merkle.inclusion_proof(index, size, get)
    for first, second in [(9, 8), (-1, 8), (5, 0)]:
        with pytest.raises(ValueError):
            merkle.consistency_proof(first, second, get)
    assert merkle.consistency_proof(0, 8, get) == [] == merkle.consistency_proof(8, 8, get)


# --- proofs at 10^7 leaves ---------------------------------------------------------------
BIG = 10**7


@lru_cache(maxsize=None)
def _uniform(level: int) -> bytes:
    """The perfect subtree of 2^level copies of one entry: a synthetic tree whose
    stored nodes are real Merkle hashes (each the node hash of its children), so
    proofs from it verify, at any size, without hashing 10^7 leaves."""
    if level == 0:
        return merkle.leaf_hash(b"the same entry")
    below = _uniform(level - 1)
    return merkle.node_hash(below, below)


def _uniform_get(level: int, index: int) -> bytes:
    return _uniform(level)


@lru_cache(maxsize=None)
def _uniform_root(n: int) -> bytes:
    """MTH of n copies of the entry, by the RFC's recursion (D[k:n] is n-k copies too)."""
    if n & (n - 1) == 0:
        return _uniform(n.bit_length() - 1)
    k = _k(n)
    return merkle.node_hash(_uniform_root(k), _uniform_root(n - k))


def test_proofs_at_ten_million_leaves_fit_in_one_kib() -> None:
    rng = random.Random(7)
    root = _uniform_root(BIG)
    assert root == merkle.subtree_hash(0, BIG, _uniform_get)
    assert root == Frontier(BIG, [_uniform(lv) for lv in range(BIG.bit_length() - 1, -1, -1) if BIG >> lv & 1]).root()
    depth = math.ceil(math.log2(BIG))  # 24
    sizes = []
    for i in [0, 1, BIG // 2, BIG - 2, BIG - 1, *rng.sample(range(BIG), 50)]:
        proof = merkle.inclusion_proof(i, BIG, _uniform_get)
        sizes.append(32 * len(proof))
        merkle.verify_inclusion(_uniform(0), i, BIG, proof, root)
        assert 32 * len(proof) <= 1024 and len(proof) <= depth
    for m in [1, 2, 2**23, 2**23 + 1, BIG // 3, BIG - 1, *rng.sample(range(1, BIG), 50)]:
        proof = merkle.consistency_proof(m, BIG, _uniform_get)
        merkle.verify_consistency(m, BIG, _uniform_root(m), root, proof)
        assert 32 * len(proof) <= 1024 and len(proof) <= depth + 1, m
        assert len(merkle.nodes_needed(lambda get: merkle.consistency_proof(m, BIG, get))) <= 2 * depth


# --- the frontier as stored --------------------------------------------------------------
@PROPS
@given(st.integers(0, 400))
def test_frontier_round_trips_and_resumes(n: int) -> None:
    f, _, _ = _store([merkle.leaf_hash(e) for e in ENTRIES[:n]])
    raw = f.to_bytes()
    assert len(raw) == 8 + 32 * bin(n).count("1")
    g = Frontier.from_bytes(raw)
    assert (g.size, g.hashes, g.root()) == (f.size, f.hashes, LOG[2][n])
    if n < 400:  # a service resumed from the stored frontier appends the same tree
        done = g.append(merkle.leaf_hash(ENTRIES[n]))
        assert g.root() == LOG[2][n + 1]
        assert all(LOG[1][(lv, ix)] == h for lv, ix, h in done)


def test_malformed_frontier_is_refused() -> None:
    h = bytes(range(32))
    bad = [b"", b"\x00" * 7, (0).to_bytes(8, "big") + h, (1).to_bytes(8, "big"),
           (1).to_bytes(8, "big") + h + h, (3).to_bytes(8, "big") + h, (7).to_bytes(8, "big") + h * 2,
           (1).to_bytes(8, "big") + h[:31], (2**64 - 1).to_bytes(8, "big") + h * 63,
           (5).to_bytes(8, "big") + h + h + b"\x00"]
    for raw in bad:
        with pytest.raises(IntegrityError):
            Frontier.from_bytes(raw)
    for size, hashes in [(-1, []), (3, [h]), (0, [h])]:
        with pytest.raises(IntegrityError):
            Frontier(size, hashes)
    assert Frontier.from_bytes((2**64 - 1).to_bytes(8, "big") + h * 64).size == 2**64 - 1


@PROPS
@given(st.binary(max_size=200))
def test_any_stored_frontier_bytes_parse_or_are_refused(raw: bytes) -> None:
    try:
        f = Frontier.from_bytes(raw)
    except IntegrityError:
        return
    assert len(f.hashes) == bin(f.size).count("1") and f.to_bytes() == raw
