"""Every benchmark in its smoke mode (a few iterations, the digits model), as
`make bench` runs them: a benchmark that breaks fails here, not at the next
`make bench`. It checks that they run and write their results, not speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = ["latency", "cold_start", "concurrency", "flask", "packing", "keyservice", "memory", "platform", "router",
           "log_proofs", "log_scale", "log_ab", "pq", "ks_capacity"]


def test_every_benchmark_runs_in_smoke_mode(tmp_path):
    report = REPO / "docs" / "performance.md"
    before = report.stat().st_mtime_ns
    p = subprocess.run([sys.executable, "-m", "bench.run_all", "--smoke", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for name in RESULTS:
        data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert data["benchmark"] == name
    lat = json.loads((tmp_path / "results" / "latency.json").read_text())["models"]["digits"]
    assert lat["sesemi"]["n"] > 0 and lat["action_invoke"]["n"] > 0
    text = (tmp_path / "docs" / "performance.md").read_text()
    assert "not run" not in text
    for img in ("perf-latency", "perf-cold", "perf-concurrency", "perf-packing", "perf-invoke", "perf-router"):
        assert (tmp_path / "docs" / "img" / f"{img}.png").stat().st_size > 0
    assert report.stat().st_mtime_ns == before, "a smoke run must not overwrite the committed report"
