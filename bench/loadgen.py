"""Closed-loop load: n client threads, each calling `call(i)` back to back until
the time is up; latencies and the rate; and what a run cost (a process's CPU,
a PostgreSQL database's commits). No import of the project's code, so a
benchmark can run it against another tree's (bench/bench_log_ab.py)."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable


def run_clients(n: int, call: Callable[[int], object], seconds: float, max_calls: int | None = None) -> dict:
    """`max_calls`: stop after that many calls in all (to stay inside a rate limiter's burst)."""
    lat: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        try:
            while time.perf_counter() < stop and (max_calls is None or sum(map(len, lat)) < max_calls):
                t0 = time.perf_counter()
                call(i)
                lat[i].append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - reported below: a failing call is no rate
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {type(errors[0]).__name__}: {errors[0]}")
    v = sorted(x for row in lat for x in row)
    return {"releases_per_s": len(v) / wall, "p50_ms": 1e3 * v[len(v) // 2],
            "p99_ms": 1e3 * v[min(len(v) - 1, int(len(v) * 0.99))], "n": len(v), "mean_latency_s": sum(v) / len(v)}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_commits(db: str) -> int:
    """The database's committed transactions so far (pg_stat_database)."""
    import psycopg

    time.sleep(1.2)  # cumulative statistics are flushed about once a second
    with psycopg.connect(db, autocommit=True) as con:
        row = con.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0
