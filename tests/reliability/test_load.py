"""Load (`make soak`): M concurrent clients for T seconds through
the action, with a parallel stream of key-service calls. Zero errors; p50 and
p99; RSS of both servers at start and end. And the action's replay window,
bounded by count and by age, with its memory measured (fast, in `make test`)."""

from __future__ import annotations

import os
import statistics
import threading
import time
import tracemalloc

import numpy as np
import pytest

from app.replay import ReplayWindow
from sesemi.client import ActionClient
from sesemi.envelope import new_request_id
from sesemi.errors import ReplayError

from ..conftest import make_world
from . import hygiene
from .figures import count, note


def test_replay_window_bounded_by_count_and_age():
    now = [0.0]
    win = ReplayWindow(max_entries=3, max_age_s=10, clock=lambda: now[0])
    win.check("m", "u", "r1")
    with pytest.raises(ReplayError):
        win.check("m", "u", "r1")
    for r in ("r2", "r3", "r4"):
        win.check("m", "u", r)
    assert len(win) == 3
    win.check("m", "u", "r1")  # pushed out by count: served again (one more inference, same user)
    now[0] = 11
    win.check("m", "u", "r9")
    assert len(win) == 1  # the rest aged out
    with pytest.raises(ReplayError):
        win.check("m", "u", "r9")


def test_replay_window_memory():
    win = ReplayWindow(max_entries=20_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20_000):
        win.check("digits", "u" * 64, new_request_id())
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    tracemalloc.stop()
    note("replay window: bytes per entry (tracemalloc)", f"{per_entry:.0f}")
    note("replay window: memory when full (100,000 entries)", f"{per_entry * 100_000 / 2**20:.1f} MiB")
    assert per_entry < 250


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.soak
def test_load(tmp_path):
    clients = int(os.environ.get("SESEMI_SOAK_CLIENTS", "8"))
    seconds = float(os.environ.get("SESEMI_SOAK_SECONDS", "60"))
    w = make_world(tmp_path)
    hygiene.watch(w.work)
    try:
        act = w.action()
        other = w.new_user("load-other")
        x = np.random.default_rng(5).random((4, 8, 8, 1), dtype=np.float32)
        hygiene.remember("load input", x.tobytes())
        warm = ActionClient(act.url)
        for _ in range(50):  # warm-up: model loaded, interpreters and pools built
            warm.infer("digits", w.user.principal_id, w.request_key, {"image": x})
        rss0 = {"action": _rss_kib(act.proc.pid), "keyservice": _rss_kib(w.ks_server.proc.pid)}
        stop = time.monotonic() + seconds
        lat: list[float] = []
        errors: list[str] = []
        ks_calls = [0]
        lock = threading.Lock()

        def client() -> None:
            c = ActionClient(act.url)
            mine = []
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    c.infer("digits", w.user.principal_id, w.request_key, {"image": x})
                    mine.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors.append(f"infer: {type(exc).__name__}: {exc}")
            with lock:
                lat.extend(mine)

        def keyservice_stream() -> None:
            while time.monotonic() < stop:
                try:
                    w.ks.grant(w.owner, "digits", other.principal_id)
                    w.ks.get_model(w.owner, "digits")
                    w.ks.revoke(w.owner, "digits", other.principal_id)
                    ks_calls[0] += 3
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(f"key service: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        threads.append(threading.Thread(target=keyservice_stream))
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        rss1 = {"action": _rss_kib(act.proc.pid), "keyservice": _rss_kib(w.ks_server.proc.pid)}
        stats = ActionClient(act.url).http.call("GET", "/stats", "stats")[0]
    finally:
        w.stop()
    lat.sort()
    p50, p99 = 1e3 * statistics.median(lat), 1e3 * lat[int(0.99 * (len(lat) - 1))]
    count("load: requests served", len(lat))
    count("load: key-service calls", ks_calls[0])
    count("load: errors", len(errors))
    note("load: shape", f"{clients} clients x {seconds:g} s, batch 4 digits images, one action, loopback")
    note("load: latency", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {len(lat) / seconds:.0f} req/s")
    for k in rss0:
        note(f"load: RSS {k}", f"{rss0[k] / 1024:.1f} -> {rss1[k] / 1024:.1f} MiB "
                                f"({(rss1[k] - rss0[k]) / 1024:+.1f})")
    note("load: replay window entries at end", str(stats.get("replay_window")))
    assert not errors, errors[:5]
    # Bounded growth: the replay window (~150 B per request served) plus allocator noise.
    assert rss1["action"] - rss0["action"] < 16 * 1024 + len(lat) * 0.3
    assert rss1["keyservice"] - rss0["keyservice"] < 32 * 1024
