"""The packing simulator: the workload generator hits the published trace
statistics it targets, and the three policies behave as docs/packing.md says
on a generated trace and on a hand-made burst."""

from __future__ import annotations

import numpy as np

from router.sim.engine import PlatformParams, Setup, Simulation
from router.sim.report import MEASURED
from router.sim.workload import ModelCost, ModelProfile, Workload, WorkloadParams, describe, generate

COSTS = MEASURED["models"]


def test_workload_matches_the_azure_2019_statistics():
    w = generate(WorkloadParams(n_models=600, duration_s=4 * 3600, seed=3), COSTS)
    s = describe(w)
    assert abs(s["share_at_most_hourly"] - 0.45) < 0.06          # Shahrad et al.: 45% <= once per hour
    assert abs(s["share_at_most_per_minute"] - 0.81) < 0.05      # ... 81% <= once per minute
    assert s["rate_orders_of_magnitude"] > 6                     # heavy tail over many orders of magnitude
    assert s["top20pct_share_of_requests"] > 0.9
    assert abs(s["timer_models"] / 600 - 0.16) < 0.05
    assert s["share_cv_above_1"] > 0.6                           # bursty
    assert np.all(np.diff(w.times) >= 0) and w.times.max() < 4 * 3600
    day = generate(WorkloadParams(n_models=100, seed=4), COSTS)
    assert describe(day)["peak_to_trough_hourly"] > 1.4          # diurnal


def _setups(per_pack: int) -> list[Setup]:
    return [Setup("per-model", "per-model", cache_models=1),
            Setup("prototype", "prototype", cache_models=1, models_per_pack=per_pack, poll=True),
            Setup("ours", "sesemi", cache_mb=1024, models_per_pack=per_pack)]


def test_burst_of_distinct_models_fails_on_the_prototype_only():
    cost = ModelCost(exec_s=0.05, load_s=0.04, size_mb=10)
    models = [ModelProfile(f"m{i}", "x", 0.001, 1.0, cost) for i in range(8)]
    w = Workload(WorkloadParams(n_models=8, duration_s=10), models, np.full(8, 1.0), np.arange(8, dtype=np.int32))
    per_model, proto, ours = (Simulation(w, s, PlatformParams()).run() for s in _setups(8))
    assert proto.failed_all_busy == 3                            # 5 actions, 8 models at once: "All Busy"
    assert ours.failed == 0 and per_model.failed == 0
    assert ours.container_starts < per_model.container_starts == 8


def test_generated_trace_fewer_cold_starts_and_no_failures():
    w = generate(WorkloadParams(n_models=80, duration_s=6 * 3600, seed=11), COSTS)
    per_model, proto, ours = (Simulation(w, s, PlatformParams(cold_start_s=MEASURED["cold_start_s"])).run()
                              for s in _setups(20))
    assert ours.failed == 0
    assert ours.cold_rate < per_model.cold_rate / 2
    assert ours.served == w.n and proto.served + proto.failed == w.n
