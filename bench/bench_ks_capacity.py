"""The key service's capacity model checked against this machine
(docs/keyservice.md, "Capacity"): request-key releases per second on
PostgreSQL with 1, 4, 16 and 32 enclave clients on one replica, and 16 and 32
clients over two replicas, against what the model predicts from quantities
measured in the same run:

- R1, the round trip of one client alone (s);
- the CPU per release of the replicas and of the clients (from /proc);
- the time and CPU under the writer lock per release, and the batch size
  (the replicas' /metrics);
- the database's committed transactions per release (pg_stat_database).

Model: X(n) = min(n / R1, cores / (cpu_server + cpu_client), batch / t_lock),
where on this machine the clients share the cores with the replicas.

    .venv/bin/python -m bench.bench_ks_capacity [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import urllib3


from bench import bench_keyservice_scale as scale
from bench.common import parse_args, progress, write_result
from bench.loadgen import pg_commits, process_cpu_s, run_clients
from bundle_tool.testing import postgres as pg_local


def _metric(url: str, name: str) -> float:
    text = urllib3.PoolManager().request("GET", url + "/metrics").data.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run(urls: list[str], servers, uid: str, key: bytes, clients: int, seconds: float, db: str) -> dict:
    sessions = [scale.session(urls[i % len(urls)], key) for i in range(clients)]
    for c, token in sessions:
        c.keys(token, "m", uid, False)      # warm
    lock0 = sum(_metric(u, "sesemi_ks_write_lock_held_seconds_total") for u in urls)
    lcpu0 = sum(_metric(u, "sesemi_ks_write_lock_cpu_seconds_total") for u in urls)
    s0, c0, x0 = sum(process_cpu_s(s.proc.pid) for s in servers), time.process_time(), pg_commits(db)
    out = run_clients(clients, lambda i: sessions[i][0].keys(sessions[i][1], "m", uid, False), seconds)
    n = out["n"]
    srv, cli = sum(process_cpu_s(s.proc.pid) for s in servers) - s0, time.process_time() - c0
    return {**out, "clients": clients, "replicas": len(urls),
            "server_cpu_ms": 1e3 * srv / n, "client_cpu_ms": 1e3 * cli / n,
            "lock_ms": 1e3 * (sum(_metric(u, "sesemi_ks_write_lock_held_seconds_total") for u in urls) - lock0) / n,
            "lock_cpu_ms": 1e3 * (sum(_metric(u, "sesemi_ks_write_lock_cpu_seconds_total") for u in urls)
                                  - lcpu0) / n,
            "commits_per_release": (pg_commits(db) - x0 - 1) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    args = parse_args(ap)
    seconds = 0.5 if args.smoke else args.seconds
    plan = [(1, 1), (4, 1)] if args.smoke else [(1, 1), (4, 1), (16, 1), (32, 1), (16, 2), (32, 2)]
    cores = os.cpu_count() or 1
    rows = []
    pg = pg_local.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sesemi-bench-cap-") as tmp:
            work = Path(tmp)
            for replicas in sorted({r for _, r in plan}):
                db = pg.create_db(f"cap{replicas}")
                servers = [scale.replica(work, f"cap{replicas}-a", db)]
                try:
                    if replicas == 2:
                        servers.append(scale.replica(work, f"cap{replicas}-b", db, join=servers[0].url))
                    urls = [s.url for s in servers]
                    uid, key = scale.setup(urls)
                    for clients, r in plan:
                        if r == replicas:
                            rows.append(run(urls, servers, uid, key, clients, seconds, db))
                            progress(f"{replicas} replica(s), {clients} clients: "
                                     f"{rows[-1]['releases_per_s']:.0f} releases/s")
                finally:
                    for s in servers:
                        s.stop()
    finally:
        pg.stop()
    r1 = next(r for r in rows if r["clients"] == 1)["mean_latency_s"]
    busy = max(rows, key=lambda r: r["clients"] * (r["replicas"] == 1))
    cpu = busy["server_cpu_ms"] + busy["client_cpu_ms"]
    for r in rows:
        lock_bound = 1e3 / busy["lock_ms"] if busy["lock_ms"] else float("inf")
        r["predicted_per_s"] = min(r["clients"] / r1, 1e3 * cores / cpu, lock_bound)
        r["measured_over_predicted"] = r["releases_per_s"] / r["predicted_per_s"]
        progress(f"{r['replicas']} replica(s), {r['clients']:>2} clients: measured {r['releases_per_s']:.0f}/s, "
                 f"predicted {r['predicted_per_s']:.0f}/s; server {r['server_cpu_ms']:.2f} + client "
                 f"{r['client_cpu_ms']:.2f} ms CPU per release; lock {r['lock_ms']:.3f} ms "
                 f"(CPU {r['lock_cpu_ms']:.3f}); commits/release {r['commits_per_release']:.2f}")
    write_result("ks_capacity", {"cores": cores, "r1_s": r1, "rows": rows})


if __name__ == "__main__":
    main()
