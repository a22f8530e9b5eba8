"""(c) Concurrency: 1, 2, 4, 8 concurrent clients on one action.

For several (interpreters per model, threads per interpreter) settings, so
the defaults are chosen from data. Clients are threads in this process, each
with its own connection, sending back to back for a fixed time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS, available, model_input, pct, progress, write_result  # noqa: E402
from bundle_tool.local import LocalWorld  # noqa: E402
from sesemi.client import ActionClient  # noqa: E402

CONFIGS = [  # (pool size, interpreter threads)
    (1, 1), (2, 1), (1, 2), (2, 2),
]


def load(url: str, name: str, uid: str, rk: bytes, clients: int, seconds: float) -> dict[str, float]:
    x = model_input(name)
    lat: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    errors: list[str] = []

    def worker(i: int) -> None:
        c = ActionClient(url)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                c.infer(name, uid, rk, {"image": x})
            except Exception as exc:  # noqa: BLE001 - counted and reported, not fatal
                errors.append(str(exc))
                if len(errors) > 20:
                    return
                continue
            lat[i].append(time.perf_counter() - t0)

    ActionClient(url).infer(name, uid, rk, {"image": x})  # loads the model before timing starts
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = [v for xs in lat for v in xs]
    return {"clients": clients, "throughput_rps": len(all_lat) / elapsed, "p50_ms": pct(all_lat, 50) * 1e3,
            "p99_ms": pct(all_lat, 99) * 1e3, "requests": len(all_lat), "errors": len(errors),
            "first_error": errors[0] if errors else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["mobilenetv2", "resnet50"])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--levels", nargs="*", type=int, default=[1, 2, 4, 8])
    args = ap.parse_args()
    names = available(args.models)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-") as tmp:
        world = LocalWorld.start(Path(tmp) / "world")
        try:
            for name in names:
                pack = world.deploy_pack(f"conc-{name}", {name: MODELS[name]})
                configs = CONFIGS if name == names[0] else [(2, 1)]
                out[name] = {}
                for pool, threads in configs:
                    action = world.action(pack, extra=["--pool-size", str(pool)],
                                          env={"SESEMI_INTERP_THREADS": str(threads)},
                                          name=f"action-{name}-{pool}x{threads}")
                    rows = []
                    for level in args.levels:
                        rows.append(load(action.url, name, world.user.principal_id, world.request_keys[name],
                                         level, args.seconds))
                        progress(f"{name} pool={pool} threads={threads} clients={level}: "
                                 f"{rows[-1]['throughput_rps']:.1f} req/s, p99 {rows[-1]['p99_ms']:.1f} ms")
                    out[name][f"pool{pool}_threads{threads}"] = {"pool_size": pool, "interp_threads": threads,
                                                                 "levels": rows}
                    action.stop()
        finally:
            world.stop()
    write_result("concurrency", {"models": out})


if __name__ == "__main__":
    main()
