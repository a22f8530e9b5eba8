"""`make bench`: every benchmark in its own process, then the report.

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

HERE = Path(__file__).resolve().parent
STEPS = [
    ("latency", ["bench_latency.py"]),
    ("cold start", ["bench_cold.py"]),
    ("concurrency", ["bench_concurrency.py"]),
    ("Flask handler (issue 9)", ["bench_flask.py"]),
    ("packing", ["bench_packing.py"]),
    ("key service", ["bench_keyservice.py"]),
    ("key service at scale (issue 14)", ["bench_keyservice_scale.py"]),
    ("post-quantum key transport", ["bench_pq.py"]),
    ("memory", ["bench_memory.py"]),
    ("platform costs (emulator)", ["bench_platform.py"]),
    ("router capacity", ["bench_router.py"]),
    ("key-service log proofs", ["bench_log.py"]),
    ("key-service log at scale", ["bench_log_scale.py"]),
    ("key-service log A/B", ["bench_log_ab.py"]),
    ("key-service capacity", ["bench_ks_capacity.py"]),
    ("report", ["report.py"]),
]


def _in_process(script: str, argv: list[str], env: dict[str, str]) -> int:
    """A smoke step in this process: the same script and arguments, without
    paying a fresh interpreter's imports for each of the steps (make test's budget)."""
    os.environ.update(env)
    saved = sys.argv
    sys.argv = [str(HERE / script), *argv]
    try:
        runpy.run_path(str(HERE / script), run_name="__main__")
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
            rc = _in_process(argv[0], [] if argv[0] == "report.py" else ["--smoke"], env)
        else:
            rc = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]], env=env)
        if rc != 0:
            print(f"benchmark {name} failed with exit code {rc}", file=sys.stderr)
            return rc
        print(f"=== {name}: {time.time() - t0:.0f}s", flush=True)
    where = args.smoke / "docs" if args.smoke else "docs"
    print(f"all benchmarks: {time.time() - t_all:.0f}s; report in {where}/performance.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
