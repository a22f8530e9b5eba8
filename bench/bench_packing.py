"""(d) Packing: one action, a pack of 3 models, requests picking a model at
random (seeded, uniform), under a memory budget that fits 2 decrypted models
(LRU), against a model cache of capacity 1 (how the SeSeMI prototype
behaves: switching models re-decrypts). Reports throughput and reloads.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import requests


from bench.common import MODELS, available, model_input, pct, progress, rss_mb, parse_args, write_result
from bundle_tool.testing.world import LocalWorld
from sesemi.client import ActionClient


def run(world: LocalWorld, pack: Path, ids: list[str], budget_mb: int, n: int, seed: int, label: str) -> dict:
    action = world.action(pack, extra=["--pool-size", "1"], env={"SESEMI_MEMORY_BUDGET_MB": str(budget_mb)},
                          name=f"action-pack-{label}")
    try:
        c = ActionClient(action.url)
        x = model_input(ids[0].split("-")[0])
        rng = random.Random(seed)
        seq = [rng.choice(ids) for _ in range(n)]
        for mid in ids:  # first loads are cold starts, not what this measures
            c.infer(mid, world.user.principal_id, world.request_keys[mid], {"image": x})
        before = requests.get(action.url + "/stats", timeout=5).json()["model_loads"]
        lat = []
        t0 = time.perf_counter()
        for mid in seq:
            t = time.perf_counter()
            c.infer(mid, world.user.principal_id, world.request_keys[mid], {"image": x})
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        st = requests.get(action.url + "/stats", timeout=5).json()
        return {"budget_mb": budget_mb, "requests": n, "throughput_rps": n / elapsed,
                "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                "reloads": st["model_loads"] - before, "evictions": st["model_evictions"],
                **rss_mb(action.proc.pid)}
    finally:
        action.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("-n", type=int, default=300)
    args = parse_args(ap)
    if args.smoke:
        args.model, args.n = "digits", 10
    available([args.model])
    src = MODELS[args.model]
    ids = [f"{args.model}-{i}" for i in range(3)]
    size_mb = src.stat().st_size / (1 << 20)
    # The store charges 2x the plaintext per model (buffer + arena allowance).
    budget_two = int(2 * 2 * size_mb + 1)
    budget_one = int(2 * size_mb + 1)
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-") as tmp:
        world = LocalWorld.start(Path(tmp) / "world")
        try:
            pack = world.deploy_pack("pack3", {mid: src for mid in ids})
            progress(f"pack of 3 x {args.model} ({size_mb:.1f} MB each); budgets {budget_two} MB and {budget_one} MB")
            lru = run(world, pack, ids, budget_two, args.n, 1, "lru2")
            progress(f"LRU (fits 2): {lru['throughput_rps']:.1f} req/s, {lru['reloads']} reloads")
            one = run(world, pack, ids, budget_one, args.n, 1, "cap1")
            progress(f"capacity 1 (prototype): {one['throughput_rps']:.1f} req/s, {one['reloads']} reloads")
        finally:
            world.stop()
    write_result("packing", {"model": args.model, "models_in_pack": 3, "lru_fits_2": lru, "capacity_1": one,
                             "throughput_ratio": lru["throughput_rps"] / one["throughput_rps"]})


if __name__ == "__main__":
    main()
