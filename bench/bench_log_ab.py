"""The verifiable log's cost on the release path, as an interleaved A/B
against the code before it (docs/keyservice.md, "Figures"): releases per
second and release latency with CLIENTS enclave clients on one replica, on
SQLite and on PostgreSQL. A is a git worktree of `--base` (default: the last
commit before the log), B is this tree; each round runs A then B or B then A
(alternating), each in its own processes with its own code on PYTHONPATH,
and the ratio B/A is taken pair by pair.

    .venv/bin/python -m bench.bench_log_ab [--rounds 5] [--seconds 4] [--clients 16] [--base REV]

It also reads, on PostgreSQL, the database's committed transactions per
release (`pg_stat_database.xact_commit`), and from B's /metrics the time under
the writer lock and the group-commit batch sizes.
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


from bench.common import parse_args, progress, write_result
from bundle_tool.testing import postgres as pg_local

REPO = Path(__file__).resolve().parents[1]
BASE = "c016a82"   # the last commit whose key service kept a MACed hash chain
MODEL_KEY = False  # --model-key: every release also carries the model key (a cold start's)

# Runs inside the tree under test: its own key service, SDK and enclave client.
DRIVER = """
import json, sys, tempfile, time
from pathlib import Path
import bench.bench_keyservice_scale as scale
db, seconds, clients, model_key = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
sys.path.insert(0, sys.argv[5])  # this tree's bench/: the load loop, whichever tree is measured
from loadgen import pg_commits, process_cpu_s, run_clients
scale.CLIENTS = clients


def request_key_releases(urls, uid, ks_key, seconds):
    # An action's steady state: the request key of a user of a model it holds.
    sessions = [scale.session(urls[0], ks_key) for _ in range(clients)]
    return run_clients(clients, lambda i: sessions[i][0].keys(sessions[i][1], "m", uid, False), seconds)


def commits():
    return pg_commits(db) if db.startswith("postgresql://") else 0


with tempfile.TemporaryDirectory(prefix="sesemi-bench-ab-") as tmp:
    work = Path(tmp)
    srv = scale.replica(work, "ks", db if db != "sqlite" else str(work / "ks.db"))
    try:
        uid, key = scale.setup([srv.url])
        release = scale.releases if model_key else request_key_releases
        release([srv.url], uid, key, 0.3)                  # warm: connections, caches
        before = commits()
        s0, c0 = process_cpu_s(srv.proc.pid), time.process_time()
        out = release([srv.url], uid, key, seconds)
        out["server_cpu_ms_per_release"] = 1e3 * (process_cpu_s(srv.proc.pid) - s0) / out["n"]
        out["client_cpu_ms_per_release"] = 1e3 * (time.process_time() - c0) / out["n"]
        out["commits_per_release"] = (commits() - before - 1) / out["n"] if before else None
        try:
            import urllib3
            text = urllib3.PoolManager().request("GET", srv.url + "/metrics").data.decode()
            vals = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}
            out["lock_held_s"] = vals.get("sesemi_ks_write_lock_held_seconds_total")
            out["batch_count"] = vals.get("sesemi_ks_commit_batch_size_count")
            out["batch_sum"] = vals.get("sesemi_ks_commit_batch_size_sum")
        except Exception:
            pass
        print(json.dumps(out))
    finally:
        srv.stop()
"""


def run(tree: Path, db: str, seconds: float, clients: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, "-c", DRIVER, db, str(seconds), str(clients), "1" if MODEL_KEY else "0",
                        str(REPO / "bench")],
                       cwd=tree, env=env,
                       capture_output=True,
                       text=True, timeout=120 + 4 * seconds)
    if p.returncode:
        raise RuntimeError(f"the driver failed in {tree}: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--model-key", action="store_true", help="every release also asks for the model key")
    args = parse_args(ap)
    rounds, seconds = (1, 0.5) if args.smoke else (args.rounds, args.seconds)
    global MODEL_KEY
    MODEL_KEY = args.model_key
    out: dict = {"base": args.base, "rounds": rounds, "seconds": seconds, "clients": args.clients,
                 "model_key": args.model_key}
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
                        got[name] = run(tree, db, seconds, args.clients)
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
                    "p99_ratio_median": statistics.median(p["B"]["p99_ms"] / p["A"]["p99_ms"] for p in pairs),
                }
                if backend == "postgresql":
                    o = out[backend]
                    o["commits_per_release"] = {k: statistics.median(p[k]["commits_per_release"] for p in pairs)
                                                for k in "AB"}
                for k in ("server_cpu_ms_per_release", "client_cpu_ms_per_release"):
                    out[backend][k] = {s: statistics.median(p[s][k] for p in pairs) for s in "AB"}
                b = [p["B"] for p in pairs if p["B"].get("batch_count")]
                if b:
                    out[backend]["mean_batch"] = statistics.median(x["batch_sum"] / x["batch_count"] for x in b)
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
