"""`make bench` (`python -m bench.run_all` from the repository): every benchmark
in its own process, then the report.

`--smoke DIR`: every benchmark with `--smoke` (a few iterations, the digits
model), results and report in DIR, each step in this process (runpy) to
spare a fresh interpreter's imports per step; `make test` runs it so that a
benchmark cannot break unseen. Its numbers mean nothing."""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = [
    ("latency", ["bench_latency"]),
    ("cold start", ["bench_cold"]),
    ("concurrency", ["bench_concurrency"]),
    ("Flask handler", ["bench_flask"]),
    ("packing", ["bench_packing"]),
    ("key service", ["bench_keyservice"]),
    ("key service at scale", ["bench_keyservice_scale"]),
    ("post-quantum key transport", ["bench_pq"]),
    ("memory", ["bench_memory"]),
    ("platform costs (emulator)", ["bench_platform"]),
    ("router capacity", ["bench_router"]),
    ("key-service log proofs", ["bench_log"]),
    ("key-service log at scale", ["bench_log_scale"]),
    ("key-service log A/B", ["bench_log_ab"]),
    ("key-service capacity", ["bench_ks_capacity"]),
    ("report", ["report"]),
]


def _in_process(module: str, argv: list[str], env: dict[str, str]) -> int:
    """A smoke step in this process: the same module and arguments, without
    paying a fresh interpreter's imports for each of the steps (make test's budget)."""
    os.environ.update(env)
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(f"bench.{module}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark, then write docs/performance.md.")
    ap.add_argument("--smoke", type=Path, metavar="DIR",
                    help="a few iterations on the digits model, results and report in DIR (measures nothing)")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.smoke:
        args.smoke.mkdir(parents=True, exist_ok=True)
        env.update(SESEMI_BENCH_RESULTS=str(args.smoke / "results"), SESEMI_BENCH_DOCS=str(args.smoke / "docs"))
    t_all = time.time()
    for i, (name, argv) in enumerate(STEPS, 1):
        print(f"=== [{i}/{len(STEPS)}] {name}", flush=True)
        t0 = time.time()
        if args.smoke:
            rc = _in_process(argv[0], [] if argv[0] == "report" else ["--smoke"], env)
        else:
            rc = subprocess.call([sys.executable, "-m", f"bench.{argv[0]}", *argv[1:]], env=env, cwd=REPO)
        if rc != 0:
            print(f"benchmark {name} failed with exit code {rc}", file=sys.stderr)
            return rc
        print(f"=== {name}: {time.time() - t0:.0f}s", flush=True)
    where = args.smoke / "docs" if args.smoke else "docs"
    print(f"all benchmarks: {time.time() - t_all:.0f}s; report in {where}/performance.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
