"""(h) One router's capacity, with the action's work excluded.

Containers run a fake action that answers at once (tests/e2e/fake_action.py),
so what is measured is the router and the OpenWhisk emulator (and the front
end, on its path). Three paths, each with 1, 2, 4, 8 concurrent clients
(threads here, each with its own connections), back to back:

- `emulator`: blocking invokes straight to the emulator through the same
  client the router uses (sesemi/openwhisk.py): the platform alone;
- `router`: POST /v1/infer to one router over the same emulator;
- `front`: the same through the front end (router/front.py) before it.

Each (payload, path, clients) run is repeated in several rounds, in a fresh
shuffled order per round, so drift on a shared machine hits all alike.
Besides requests/s, it records the CPU each process spent per request (from
/proc): the router's CPU ms per request is what sizes it (one core serves
about 1000 / that many requests/s), and moves less with other load than
requests/s do. Writes bench/results/router.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import urllib3


from bench.common import REPO, cpu_s, pct, parse_args, process_tree, progress, write_result
from bundle_tool.testing.openwhisk_local import (client_for, deploy_pool, start_emulator, start_front,
                                        start_router, write_front_config, write_router_config)
from bundle_tool.testing.processes import Server, free_port
from sesemi import envelope
from sesemi.encoding import json_dumps

FAKE = REPO / "tests" / "e2e" / "fake_action.py"
MODELS = [f"m{i}" for i in range(1, 5)]
ACTIONS = 2
SLOTS = 8       # per action (limits.concurrency and the router's share_limit): 8 clients never queue
PATHS = ("emulator", "router", "front")


def _envelope(model: str, payload_bytes: int) -> dict:
    """A real request envelope's shape and size; nobody decrypts it."""
    return envelope.seal(envelope.new_request_key(), model, "bench-user", envelope.new_request_id(),
                         envelope.REQUEST, os.urandom(payload_bytes)).to_json()


class Stack:
    def __init__(self, work: Path) -> None:
        self.servers: list[Server] = []
        wskprops = work / "platform" / "wskprops"            # where start_emulator has it written
        self.pool = [f"null-{i}" for i in range(1, ACTIONS + 1)]  # what deploy_pool names them
        cfg = write_router_config(work / "router.json", wskprops, {"null": (MODELS, self.pool)},
                                  {"share_limit": SLOTS})
        port = free_port()
        front_cfg = write_front_config(work / "front.json", {"r1": (f"http://127.0.0.1:{port}", cfg)})
        with ThreadPoolExecutor(1) as ex:  # the front end needs no router to start
            front = ex.submit(start_front, work, front_cfg)
            try:
                self.emulator, written = start_emulator(work, keep_alive_s=600, max_containers=ACTIONS * 2,
                                                        extra=["--image", f"null={sys.executable} {FAKE}",
                                                               "--max-payload-mb", "2"])
                self.servers.append(self.emulator)
            finally:
                self.front = front.result()
                self.servers.append(self.front)
        if written != wskprops or deploy_pool(wskprops, "null", ACTIONS, {}, image="null", concurrency=SLOTS,
                                              memory_mb=128) != self.pool:
            raise RuntimeError("the emulator's credentials or the pool's names moved: update bench_router.py")
        self.router = start_router(work, cfg, "router", port)
        self.servers.append(self.router)
        self.ow = client_for(wskprops)

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.servers)) as ex:
            list(ex.map(lambda s: s.stop(), self.servers))

    def cpu_groups(self) -> dict[str, list[int]]:
        """Process ids per component; the containers are the emulator's descendants that run the fake."""
        emulator = process_tree(self.emulator.proc.pid)
        containers = [p for p in emulator if _argv(p)[1:2] == [str(FAKE)]]
        return {"client": [os.getpid()], "front": process_tree(self.front.proc.pid),
                "router": process_tree(self.router.proc.pid),
                "emulator": [p for p in emulator if p not in containers], "containers": containers}

    def caller(self, path: str, payload_bytes: int) -> Callable[[int], Callable[[], bool]]:
        """For client i, a function doing one request and saying whether it succeeded."""
        def make(i: int) -> Callable[[], bool]:
            model = MODELS[i % len(MODELS)]
            env = _envelope(model, payload_bytes)
            if path == "emulator":
                action = self.pool[i % ACTIONS]
                return lambda: self.ow.invoke(action, env).success
            url = (self.router if path == "router" else self.front).url + "/v1/infer"
            body = json_dumps({"value": env})
            http = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(connect=5, read=60))
            headers = {"Content-Type": "application/json"}
            return lambda: http.request("POST", url, body=body, headers=headers).status == 200
        return make


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _group_cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, pids in groups.items():
        total = 0.0
        for p in pids:
            try:
                total += cpu_s(p)
            except OSError:
                pass
        out[name] = total
    return out


def run(stack: Stack, path: str, payload_bytes: int, clients: int, seconds: float) -> dict:
    make = stack.caller(path, payload_bytes)
    calls = [make(i) for i in range(clients)]
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    groups = stack.cpu_groups()
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        call, mine = calls[i], lat[i]
        barrier.wait()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                ok = call()
            except Exception:  # noqa: BLE001 - counted and reported, not fatal
                ok = False
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                errors[i] += 1
                if errors[i] > 20:
                    return

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    cpu0 = _group_cpu(groups)
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = {k: v - cpu0[k] for k, v in _group_cpu(groups).items()}
    return {"latencies": [x for xs in lat for x in xs], "elapsed_s": elapsed, "errors": sum(errors), "cpu_s": cpu}


def summarise(parts: list[dict], clients: int) -> dict:
    lat = [x for p in parts for x in p["latencies"]]
    elapsed = sum(p["elapsed_s"] for p in parts)
    n = max(1, len(lat))
    cpu = {k: sum(p["cpu_s"][k] for p in parts) for k in parts[0]["cpu_s"]}
    return {"clients": clients, "requests": len(lat), "errors": sum(p["errors"] for p in parts),
            "throughput_rps": len(lat) / elapsed, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "cpu_ms_per_request": {k: 1e3 * v / n for k, v in cpu.items()},
            "cores_busy": sum(cpu.values()) / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,2,4,8", help="concurrency levels (default 1,2,4,8)")
    ap.add_argument("--payloads", default="1024,602112",
                    help="plaintext bytes per request: 1 KiB (a digits input) and 588 KiB (a MobileNetV2 "
                         "224x224x3 float32 input); default both")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one run (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per (payload, path, clients), interleaved")
    args = parse_args(ap)
    if args.smoke:
        args.clients, args.payloads, args.seconds, args.rounds = "1,2", "1024", 0.2, 1
    levels = [int(c) for c in args.clients.split(",")]
    payloads = [int(p) for p in args.payloads.split(",")]
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        stack = Stack(Path(tmp))
        try:
            for p in payloads:  # start and warm the containers on every path
                for path in PATHS:
                    run(stack, path, p, max(levels), min(0.5, args.seconds / 2))
            combos = [(p, path, c) for p in payloads for path in PATHS for c in levels]
            parts: dict[tuple, list[dict]] = {k: [] for k in combos}
            rng = random.Random(0)
            for r in range(args.rounds):
                rng.shuffle(combos)
                for key in combos:
                    p, path, c = key
                    parts[key].append(run(stack, path, p, c, args.seconds))
                progress(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})")
        finally:
            stack.stop()
    results: dict[str, dict[str, list[dict]]] = {}
    for p in payloads:
        results[str(p)] = {path: [summarise(parts[(p, path, c)], c) for c in levels] for path in PATHS}
    ratios, capacity = {}, {}
    for p, paths in results.items():
        em, ro, fr = paths["emulator"], paths["router"], paths["front"]
        ratios[p] = {"router_over_emulator": [r["throughput_rps"] / e["throughput_rps"] for r, e in zip(ro, em)],
                     "front_over_router": [f["throughput_rps"] / r["throughput_rps"] for f, r in zip(fr, ro)]}
        router_ms = statistics.median(r["cpu_ms_per_request"]["router"] for r in ro)
        front_ms = statistics.median(f["cpu_ms_per_request"]["front"] for f in fr)
        capacity[p] = {"router_cpu_ms_per_request": router_ms, "router_rps_per_core": 1e3 / router_ms,
                       "front_cpu_ms_per_request": front_ms, "front_rps_per_core": 1e3 / front_ms,
                       "peak_router_rps": max(r["throughput_rps"] for r in ro),
                       "router_added_p50_ms_1_client": ro[0]["p50_ms"] - em[0]["p50_ms"],
                       "front_added_p50_ms_1_client": fr[0]["p50_ms"] - ro[0]["p50_ms"]}
        progress(f"payload {p} B: router {router_ms:.2f} CPU ms/request (~{1e3 / router_ms:.0f} req/s per core), "
                 f"peak {capacity[p]['peak_router_rps']:.0f} req/s; router/emulator "
                 + ", ".join(f"{x:.2f}" for x in ratios[p]["router_over_emulator"])
                 + "; front/router " + ", ".join(f"{x:.2f}" for x in ratios[p]["front_over_router"]))
    errors = sum(r["errors"] for paths in results.values() for rows in paths.values() for r in rows)
    write_result("router", {"levels": levels, "payload_bytes": payloads, "seconds_per_run": args.seconds,
                            "rounds": args.rounds, "actions": ACTIONS, "slots_per_action": SLOTS,
                            "loadavg_before": load_before, "errors": errors, "results": results,
                            "ratios": ratios, "capacity": capacity})
    if errors:
        progress(f"{errors} request(s) failed: see bench/results/router.json")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
