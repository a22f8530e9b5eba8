"""The action's handler as a Flask app through WSGI
(bench/flask_action.py) against today's handler, on the same one-process
threaded server. Warm: both actions side by side, interleaved call by call.
Cold: process start -> /init -> first answer, interleaved starts.
Keep Flask only if the MobileNetV2 warm p50 grows by <= 0.1 ms and the cold
start by <= 5 % (docs/performance.md has the outcome)."""

from __future__ import annotations

import argparse
import statistics
import sys

import requests


from bench.bench_cold import retried, sesemi_cold
from bench.common import (bench_world, INTERP_THREADS, MODELS, available, interleaved, model_input,
                          parse_args, progress, summary_ms, write_result)
from bundle_tool.testing.processes import free_port, start_process
from sesemi.client import ActionClient

FLASK = ["-m", "bench.flask_action"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["digits", "mobilenetv2"])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5)
    args = parse_args(ap)
    if args.smoke:
        args.models, args.n, args.reps = ["digits"], 10, 1
    names = available(args.models)
    out = {}
    with bench_world() as (work, world), open(work / "flask-cold.log", "ab") as log:
        for name in names:
            x = model_input(name)
            pack = world.deploy_pack(f"flask-{name}", {name: MODELS[name]})
            env = {"SESEMI_INTERP_THREADS": str(INTERP_THREADS)}
            today = world.action(pack, extra=["--pool-size", "1"], env=env, name=f"action-{name}")
            port = free_port()
            flask = start_process(f"flask-{name}", [sys.executable, *FLASK, str(port)], port, work / "logs",
                                  "/stats", env={**env, "SESEMI_PACK": str(pack), "SESEMI_KS_URL": world.ks_server.url,
                                                 "SESEMI_KS_KEY": world.ks_key(), "SESEMI_POOL_SIZE": "1"})
            world.servers.append(flask)
            requests.post(flask.url + "/init", json={"value": {}}, timeout=60).raise_for_status()
            uid, rk = world.user.principal_id, world.request_keys[name]
            clients = {"today": ActionClient(today.url), "flask": ActionClient(flask.url)}
            t = interleaved({k: (lambda c=c: c.infer(name, uid, rk, {"image": x})) for k, c in clients.items()},
                            args.n)
            warm = {k: summary_ms(v) for k, v in t.items()}
            today.stop()
            flask.stop()
            cold: dict[str, list[float]] = {"today": [], "flask": []}
            for _ in range(args.reps):
                cold["today"].append(retried(sesemi_cold, world, pack, name, log)["total_s"])
                cold["flask"].append(retried(sesemi_cold, world, pack, name, log,
                                             cmd=lambda p: [sys.executable, *FLASK, str(p)])["total_s"])
            c = {k: statistics.median(v) * 1e3 for k, v in cold.items()}
            out[name] = {"warm": warm, "warm_p50_delta_ms": warm["flask"]["p50_ms"] - warm["today"]["p50_ms"],
                         "cold_ms": c, "cold_ratio": c["flask"] / c["today"], "reps": args.reps}
            progress(f"{name}: warm p50 today {warm['today']['p50_ms']:.2f} ms, Flask {warm['flask']['p50_ms']:.2f} "
                     f"ms (+{out[name]['warm_p50_delta_ms']:.2f}); cold today {c['today']:.0f} ms, Flask "
                     f"{c['flask']:.0f} ms (x{out[name]['cold_ratio']:.3f})")
    write_result("flask", {"models": out, "keep_if": {"warm_p50_delta_ms": 0.1, "cold_ratio": 1.05}})


if __name__ == "__main__":
    main()
