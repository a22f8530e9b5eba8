"""The key-service log's cost per answer (sesemi/merkle.py, sesemi/checkpoint.py):
for trees of 10^3, 10^5 and 10^7 leaves, the bytes of an inclusion proof, of a
consistency proof from a random earlier size and from size-1, and of a signed
checkpoint note; the µs to produce each proof and to verify it, and to sign
and open the note. Medians over many repetitions, every variant of one tree
size interleaved call by call with a baseline measured in the same run: one
Ed25519 verification of a 64-byte message, what every answer's response
signature already costs its client.

10^3 and 10^5 leaves: the tree is built with `Frontier.append` into a dict of
its perfect subtrees, as the store keeps them, and proofs read that dict.
10^7 leaves: SYNTHETIC. Building 2·10^7 nodes in Python takes minutes and
gigabytes, so the getter serves a deterministic tree whose leaves are all one
entry: every node of a level is the same real Merkle hash (computed once),
proofs read as many nodes and verification hashes as many times as in any
tree of that size, and they verify against that tree's real root.

This measures the computation only; the store fetches a proof's nodes
(`merkle.nodes_needed`) in one query, whose cost the key-service benchmarks
include. Producing at 10^7 reads a list, not a dict of 2·10^7 entries (whose
lookups miss the CPU caches, as 10^5's already do): compare verification
across sizes, and production only between the built trees.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import interleaved, parse_args, progress, write_result  # noqa: E402
from sesemi import checkpoint, merkle  # noqa: E402
from sesemi.identity import Identity, verify_signature  # noqa: E402

SIZES = [10**3, 10**5, 10**7]
BUILT_UP_TO = 10**5  # larger trees are synthetic (module docstring)


@lru_cache(maxsize=None)
def _uniform(level: int) -> bytes:
    """The perfect subtree of 2^level copies of one entry."""
    if level == 0:
        return merkle.leaf_hash(b"synthetic entry")
    below = _uniform(level - 1)
    return merkle.node_hash(below, below)


class Tree:
    """A getter for the tree of n leaves, its leaves and its roots at earlier sizes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.synthetic = n > BUILT_UP_TO
        if self.synthetic:
            levels = [_uniform(level) for level in range(n.bit_length())]
            self.get: merkle.NodeGetter = lambda level, index: levels[level]
            self.build_s = 0.0
        else:
            nodes: dict[tuple[int, int], bytes] = {}
            f = merkle.Frontier()
            t0 = time.perf_counter()
            for i in range(n):
                for level, index, h in f.append(merkle.leaf_hash(b"entry %d" % i)):
                    nodes[(level, index)] = h
            self.build_s = time.perf_counter() - t0
            self.get = lambda level, index: nodes[(level, index)]
        self.root = self.root_at(n)

    def leaf(self, i: int) -> bytes:
        return self.get(0, i)

    def root_at(self, m: int) -> bytes:
        return merkle.subtree_hash(0, m, self.get) if m else merkle.EMPTY_ROOT


def _cycle(values: list) -> Callable[[], object]:
    """The next of `values` at each call, round and round: every rep a different argument."""
    state = {"i": -1}

    def nxt():
        state["i"] = (state["i"] + 1) % len(values)
        return values[state["i"]]
    return nxt


def _median_us(xs: list[float]) -> float:
    return statistics.median(xs) * 1e6


def measure(n: int, reps: int, ks: Identity, rng: random.Random) -> dict:
    t0 = time.perf_counter()
    tree = Tree(n)
    progress(f"n={n:,}: tree ready in {time.perf_counter() - t0:.1f} s"
             + (" (synthetic, module docstring)" if tree.synthetic else ""))
    k = max(50, min(reps, 500))  # distinct arguments, cycled through the reps
    idx = [rng.randrange(n) for _ in range(k)]
    earlier = [rng.randrange(1, n) for _ in range(k)]
    incl = {i: merkle.inclusion_proof(i, n, tree.get) for i in idx}
    cons = {m: merkle.consistency_proof(m, n, tree.get) for m in earlier}
    roots = {m: tree.root_at(m) for m in [*earlier, n - 1]}
    last = merkle.consistency_proof(n - 1, n, tree.get)
    for i in idx[:20]:
        merkle.verify_inclusion(tree.leaf(i), i, n, incl[i], tree.root)
    for m in earlier[:20]:
        merkle.verify_consistency(m, n, roots[m], tree.root, cons[m])
    merkle.verify_consistency(n - 1, n, roots[n - 1], tree.root, last)

    origin = checkpoint.origin_for(ks.public_raw)
    cp = checkpoint.Checkpoint(origin, n, tree.root)
    note = checkpoint.sign(cp, ks.private_key, ks.public_raw)
    assert checkpoint.open_(note, ks.public_raw) == cp
    msg = bytes(64)
    sig = ks.sign(msg)

    ni, nm = _cycle(idx), _cycle(earlier)
    vi, vm = _cycle(idx), _cycle(earlier)
    variants = {
        "inclusion.produce": lambda: merkle.inclusion_proof(ni(), n, tree.get),
        "inclusion.verify": lambda: (lambda i: merkle.verify_inclusion(tree.leaf(i), i, n, incl[i], tree.root))(vi()),
        "consistency_random.produce": lambda: merkle.consistency_proof(nm(), n, tree.get),
        "consistency_random.verify": lambda: (lambda m: merkle.verify_consistency(
            m, n, roots[m], tree.root, cons[m]))(vm()),
        "consistency_last.produce": lambda: merkle.consistency_proof(n - 1, n, tree.get),
        "consistency_last.verify": lambda: merkle.verify_consistency(n - 1, n, roots[n - 1], tree.root, last),
        "checkpoint.sign": lambda: checkpoint.sign(cp, ks.private_key, ks.public_raw),
        "checkpoint.open": lambda: checkpoint.open_(note, ks.public_raw),
        "baseline.ed25519_verify": lambda: verify_signature(ks.public_raw, sig, msg),
    }
    times = interleaved(variants, reps, on_progress=lambda i: progress(f"n={n:,}: {i}/{reps} reps"))
    us = {name: _median_us(xs) for name, xs in times.items()}
    base = us["baseline.ed25519_verify"]

    def proof_row(kind: str, lengths: list[int], nodes: list[int]) -> dict:
        return {"bytes_median": 32 * statistics.median(lengths), "bytes_max": 32 * max(lengths),
                "hashes_max": max(lengths), "stored_nodes_read_max": max(nodes),
                "produce_us": us[f"{kind}.produce"], "verify_us": us[f"{kind}.verify"],
                "verify_vs_ed25519_verify": us[f"{kind}.verify"] / base}

    def reads(fn: Callable[[merkle.NodeGetter], object]) -> int:
        return len(merkle.nodes_needed(fn))

    return {
        "leaves": n,
        "synthetic_tree": tree.synthetic,
        "build_s": tree.build_s,
        "append_us_mean": tree.build_s / n * 1e6 if not tree.synthetic else None,
        "distinct_arguments": k,
        "inclusion": proof_row("inclusion", [len(p) for p in incl.values()],
                               [reads(lambda g, i=i: merkle.inclusion_proof(i, n, g)) for i in idx]),
        "consistency_from_random_size": proof_row("consistency_random", [len(p) for p in cons.values()],
                                                  [reads(lambda g, m=m: merkle.consistency_proof(m, n, g))
                                                   for m in earlier]),
        "consistency_from_size_minus_1": proof_row("consistency_last", [len(last)],
                                                   [reads(lambda g: merkle.consistency_proof(n - 1, n, g))]),
        "checkpoint": {"note_bytes": len(note.encode()), "sign_us": us["checkpoint.sign"],
                       "open_us": us["checkpoint.open"], "open_vs_ed25519_verify": us["checkpoint.open"] / base},
        "baseline_ed25519_verify_us": base,
        "reps": reps,
    }


def table(rows: list[dict]) -> str:
    head = (f"{'leaves':>12} {'what':<30} {'bytes (med/max)':>16} {'produce µs':>11} {'verify µs':>10} "
            f"{'verify/Ed25519':>15}")
    out = [head, "-" * len(head)]
    for r in rows:
        n = f"{r['leaves']:,}" + ("*" if r["synthetic_tree"] else "")
        for key, label in [("inclusion", "inclusion proof"), ("consistency_from_random_size", "consistency, random m"),
                           ("consistency_from_size_minus_1", "consistency, m = n-1")]:
            p = r[key]
            out.append(f"{n:>12} {label:<30} {p['bytes_median']:>7.0f}/{p['bytes_max']:<8.0f} "
                       f"{p['produce_us']:>11.1f} {p['verify_us']:>10.1f} {p['verify_vs_ed25519_verify']:>15.2f}")
        c = r["checkpoint"]
        out.append(f"{n:>12} {'signed checkpoint (sign/open)':<30} {c['note_bytes']:>16} {c['sign_us']:>11.1f} "
                   f"{c['open_us']:>10.1f} {c['open_vs_ed25519_verify']:>15.2f}")
        out.append(f"{n:>12} {'baseline: one Ed25519 verify':<30} {'':>16} {'':>11} "
                   f"{r['baseline_ed25519_verify_us']:>10.1f} {1:>15.2f}")
    out.append("* synthetic tree (one entry repeated; real hashes, real root): see bench/bench_log.py")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3000, help="timed calls of each variant per tree size")
    args = parse_args(ap)
    sizes = SIZES
    if args.smoke:
        args.reps, sizes = 20, [10**3, 10**7]
    rng = random.Random(2025)
    ks = Identity.generate("keyservice")
    rows = [measure(n, args.reps, ks, rng) for n in sizes]
    print(table(rows), flush=True)
    write_result("log_proofs", {
        "what": "RFC 9162 proofs and C2SP signed checkpoints: bytes, and µs to produce and verify (medians)",
        "synthetic_above": BUILT_UP_TO,
        "goal_proof_bytes_at_1e7": 1024,
        "sizes": rows,
    })


if __name__ == "__main__":
    main()
