"""`make bench`: every benchmark in its own process, then the report."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = [
    ("latency", ["bench_latency.py"]),
    ("cold start", ["bench_cold.py"]),
    ("concurrency", ["bench_concurrency.py"]),
    ("packing", ["bench_packing.py"]),
    ("key service", ["bench_keyservice.py"]),
    ("memory", ["bench_memory.py"]),
    ("platform costs (emulator)", ["bench_platform.py"]),
    ("report", ["report.py"]),
]


def main() -> int:
    t_all = time.time()
    for i, (name, argv) in enumerate(STEPS, 1):
        print(f"=== [{i}/{len(STEPS)}] {name}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
        if rc != 0:
            print(f"benchmark {name} failed with exit code {rc}", file=sys.stderr)
            return rc
        print(f"=== {name}: {time.time() - t0:.0f}s", flush=True)
    print(f"all benchmarks: {time.time() - t_all:.0f}s; report in docs/performance.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
