"""Shared benchmark plumbing: models, inputs, timing, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    from bundle_tool.testing.world import LocalWorld

REPO = Path(__file__).resolve().parents[1]
# `--smoke` runs (make test) write elsewhere, so they never overwrite a real run's results.
RESULTS = Path(os.environ.get("SESEMI_BENCH_RESULTS") or REPO / "bench" / "results")
MODEL_CACHE = Path(os.environ.get("SESEMI_BENCH_MODELS") or Path.home() / ".cache" / "sesemi" / "bench-models")

MODELS = {
    "digits": REPO / "models" / "digits" / "digits.tflite",
    "mobilenetv2": MODEL_CACHE / "mobilenetv2.tflite",
    "resnet50": MODEL_CACHE / "resnet50.tflite",
    "densenet121": MODEL_CACHE / "densenet121.tflite",
    # 224x224x3 in, 1000 out, next to no compute: the protocol's cost on those bytes
    "null224": MODEL_CACHE / "null224.tflite",
}

# One interpreter thread per request: on 2 cores, two requests in parallel use
# both (see the concurrency benchmark); every variant uses the same setting.
INTERP_THREADS = int(os.environ.get("SESEMI_BENCH_INTERP_THREADS", "1"))


def parse_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """The benchmark's arguments plus `--smoke` (a few iterations on the digits
    model: checks that it runs, measures nothing). A smoke run never writes
    into bench/results unless SESEMI_BENCH_RESULTS says where."""
    global RESULTS
    ap.add_argument("--smoke", action="store_true",
                    help="a few iterations on the digits model: checks the benchmark runs, measures nothing")
    args = ap.parse_args()
    if args.smoke and not os.environ.get("SESEMI_BENCH_RESULTS"):
        RESULTS = Path(tempfile.mkdtemp(prefix="sesemi-bench-smoke-"))
    return args


def model_input(name: str, batch: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name == "digits":
        return rng.random((batch, 8, 8, 1), dtype=np.float32)
    return rng.random((batch, 224, 224, 3), dtype=np.float32)


def available(names: list[str]) -> list[str]:
    missing = [n for n in names if not MODELS[n].exists()]
    if missing:
        sys.exit(f"missing benchmark models {missing}: run `make bench-models` "
                 f"(tools/make_bench_models.py) first")
    return names


def timed(fn: Callable[[], Any], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(variants: dict[str, Callable[[], Any]], n: int, warmup: int = 3,
                on_progress: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """n timed calls of each variant, one call at a time in a fresh shuffled order
    per iteration: on a shared VM the speed drifts by ~10 % within seconds, and
    alternating blocks of calls measured the drift, not the variants."""
    import random

    for fn in variants.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(0)
    keys = list(variants)
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(n):
        rng.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter()
            variants[k]()
            out[k].append(time.perf_counter() - t0)
        if on_progress and (i + 1) % max(1, n // 5) == 0:
            on_progress(i + 1)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary_ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(xs, 50) * 1e3, "p99_ms": pct(xs, 99) * 1e3, "mean_ms": statistics.fmean(xs) * 1e3,
            "n": len(xs)}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The load average at the end: on a shared machine it says how noisy the run was.
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
                        "interp_threads": INTERP_THREADS, "loadavg_1_5_15": list(os.getloadavg())}, **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    progress(f"wrote {path}")
    return path


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (Linux /proc): a gunicorn server is an arbiter and a worker."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rss_mb(pid: int) -> dict[str, float]:
    """Current and peak resident set of a process, from /proc (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            out["rss_mb" if k == "VmRSS" else "peak_rss_mb"] = int(v.split()[0]) / 1024
    return out


@contextmanager
def bench_world() -> Iterator[tuple[Path, "LocalWorld"]]:
    """A scratch directory and a running local deployment (key service, owner, user)."""
    from bundle_tool.testing.world import LocalWorld

    with tempfile.TemporaryDirectory(prefix="sesemi-bench-") as tmp:
        work = Path(tmp)
        world = LocalWorld.start(work / "world")
        try:
            yield work, world
        finally:
            world.stop()
