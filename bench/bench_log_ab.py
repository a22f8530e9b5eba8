"""The verifiable log's cost on the release path, as an interleaved A/B
against the code before it (docs/keyservice.md, "Figures"): releases per
second and release latency with CLIENTS enclave clients on one replica, on
SQLite and on PostgreSQL. A is a git worktree of `--base` (default: the last
commit before the log), B is this tree; each round runs A then B or B then A
(alternating), each in its own processes with its own code on PYTHONPATH,
and the ratio B/A is taken pair by pair.

    .venv/bin/python bench/bench_log_ab.py [--rounds 5] [--seconds 4] [--base REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import parse_args, progress, write_result  # noqa: E402
from bundle_tool import pg_local  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = "c016a82"  # the last commit whose key service kept a MACed hash chain

# Runs inside the tree under test: its own key service, SDK and enclave client.
DRIVER = """
import json, sys, tempfile
from pathlib import Path
from bench.bench_keyservice_scale import replica, releases, setup
db, seconds = sys.argv[1], float(sys.argv[2])
with tempfile.TemporaryDirectory(prefix="sesemi-bench-ab-") as tmp:
    work = Path(tmp)
    srv = replica(work, "ks", db if db != "sqlite" else str(work / "ks.db"))
    try:
        uid, key = setup([srv.url])
        releases([srv.url], uid, key, 0.3)          # warm: connections, caches
        print(json.dumps(releases([srv.url], uid, key, seconds)))
    finally:
        srv.stop()
"""


def run(tree: Path, db: str, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, "-c", DRIVER, db, str(seconds)], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=120 + 4 * seconds)
    if p.returncode:
        raise RuntimeError(f"the driver failed in {tree}: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--base", default=BASE)
    args = parse_args(ap)
    rounds, seconds = (1, 0.5) if args.smoke else (args.rounds, args.seconds)
    out: dict = {"base": args.base, "rounds": rounds, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-base-") as tmp:
        base = Path(tmp) / "base"
        if args.smoke:  # the path only, this tree on both sides (a clone may lack the base commit)
            base = REPO
        else:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(base), args.base],
                           check=True, capture_output=True)
        pg = None
        try:
            backends = ["sqlite"] if args.smoke else ["sqlite", "postgresql"]
            if "postgresql" in backends:
                pg = pg_local.start()
            for backend in backends:
                pairs = []
                for r in range(rounds):
                    order = [("A", base), ("B", REPO)] if r % 2 == 0 else [("B", REPO), ("A", base)]
                    got = {}
                    for name, tree in order:
                        db = "sqlite" if backend == "sqlite" else pg.create_db(f"ab_{backend}_{r}_{name.lower()}")
                        got[name] = run(tree, db, seconds)
                    pairs.append(got)
                    progress(f"{backend} round {r + 1}/{rounds}: A {got['A']['releases_per_s']:.0f}/s, "
                             f"B {got['B']['releases_per_s']:.0f}/s")
                ratio = [p["B"]["releases_per_s"] / p["A"]["releases_per_s"] for p in pairs]
                out[backend] = {
                    "pairs": pairs,
                    "rate_ratio_median": statistics.median(ratio),
                    "p50_ms": {k: statistics.median(p[k]["p50_ms"] for p in pairs) for k in "AB"},
                    "p99_ms": {k: statistics.median(p[k]["p99_ms"] for p in pairs) for k in "AB"},
                    "releases_per_s": {k: statistics.median(p[k]["releases_per_s"] for p in pairs) for k in "AB"},
                }
                o = out[backend]
                progress(f"{backend}: releases/s B/A median {o['rate_ratio_median']:.3f} "
                         f"(A {o['releases_per_s']['A']:.0f}, B {o['releases_per_s']['B']:.0f}); p50 A "
                         f"{o['p50_ms']['A']:.2f} B {o['p50_ms']['B']:.2f} ms; p99 A {o['p99_ms']['A']:.1f} "
                         f"B {o['p99_ms']['B']:.1f} ms")
        finally:
            if pg is not None:
                pg.stop()
            if base != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                               capture_output=True)
    write_result("log_ab", out)


if __name__ == "__main__":
    main()
