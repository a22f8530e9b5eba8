"""A synthetic inference workload with the published statistics of the Azure
Functions 2019 trace (Shahrad et al., "Serverless in the Wild", USENIX ATC
2020). Which numbers come from the paper and which are our assumptions is
listed in docs/packing.md; in short:

- popularity: per-model mean invocation rate, log10(invocations per day)
  ~ Normal(mu, sigma) with mu, sigma solved so that 45% of functions are
  invoked at most once per hour and 81% at most once per minute (the paper's
  figures for applications), which spreads rates over ~8 orders of magnitude;
- timers: 16% of functions are timer-triggered (the paper's trigger
  breakdown): periodic arrivals (inter-arrival CV 0);
- bursts: other functions are a renewal process with Gamma inter-arrival
  times of CV > 1 (the paper: inter-arrival times are highly variable, many
  functions far burstier than Poisson) -- the CV distribution is ours;
- diurnal: the aggregate load follows a 24-hour cycle (the paper's Fig. 3
  shows diurnal and weekly patterns); we use a sinusoid with peak/trough 2.

Execution and load times are not Azure's (those are general functions): each
model gets one of our benchmark architectures with the times we measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Solved from P(X <= log10(24)) = 0.45 and P(X <= log10(1440)) = 0.81 for X ~ N(mu, sigma).
_Z45, _Z81 = -0.12566, 0.87790
LOG10_DAILY_SIGMA = (math.log10(1440) - math.log10(24)) / (_Z81 - _Z45)
LOG10_DAILY_MU = math.log10(24) - _Z45 * LOG10_DAILY_SIGMA


@dataclass(frozen=True)
class ModelCost:
    exec_s: float   # warm request, inside the action
    load_s: float   # first request for the model in a warm container: keys, decrypt, interpreter
    size_mb: float


@dataclass(frozen=True)
class ModelProfile:
    model_id: str
    arch: str
    rate_per_s: float   # mean over the day
    cv: float           # inter-arrival coefficient of variation (0: timer)
    cost: ModelCost


@dataclass(frozen=True)
class WorkloadParams:
    n_models: int = 60
    duration_s: float = 24 * 3600.0
    seed: int = 2019                     # the model population (rates, burstiness, architectures)
    arrival_seed: int = 0                # the arrivals: another value, the same models on another day
    log10_daily_mu: float = LOG10_DAILY_MU
    log10_daily_sigma: float = LOG10_DAILY_SIGMA
    max_rate_per_s: float = 0.5          # cap on one model's mean rate (keeps the simulation small)
    timer_fraction: float = 0.16
    bursty_cv_median: float = 2.0        # assumption: lognormal CV, median 2, 90% within [1.0, 4.0]
    bursty_cv_log10_sigma: float = 0.23
    diurnal_amplitude: float = 1 / 3     # rate x (1 - A cos(2 pi t / P)): peak/trough = (1+A)/(1-A) = 2
    diurnal_period_s: float = 24 * 3600.0
    arch_mix: dict = field(default_factory=lambda: {"digits": 0.25, "mobilenetv2": 0.45,
                                                    "densenet121": 0.2, "resnet50": 0.1})


@dataclass
class Workload:
    params: WorkloadParams
    models: list[ModelProfile]
    times: np.ndarray     # arrival times, sorted
    model_idx: np.ndarray  # index into models, per arrival

    @property
    def n(self) -> int:
        return len(self.times)


def _warp(period: float, amp: float, horizon: float) -> tuple[Any, Any, float]:
    """Operational time u = Lambda(t) of the diurnal intensity, and its inverse."""
    grid = np.linspace(0.0, horizon, int(horizon / 30) + 2)
    lam = grid - amp * period / (2 * math.pi) * np.sin(2 * math.pi * grid / period)
    return (lambda t: np.interp(t, grid, lam)), (lambda u: np.interp(u, lam, grid)), lam[-1]


def generate(params: WorkloadParams, costs: dict[str, ModelCost]) -> Workload:
    rng = np.random.default_rng(params.seed)
    archs = [a for a in params.arch_mix if a in costs]
    if not archs:
        raise ValueError("no architecture of arch_mix has a cost")
    weights = np.array([params.arch_mix[a] for a in archs], dtype=float)
    weights /= weights.sum()
    _, inverse, u_end = _warp(params.diurnal_period_s, params.diurnal_amplitude, params.duration_s)
    models: list[ModelProfile] = []
    for i in range(params.n_models):
        daily = 10 ** rng.normal(params.log10_daily_mu, params.log10_daily_sigma)
        rate = min(daily / 86400.0, params.max_rate_per_s)
        timer = rng.random() < params.timer_fraction
        cv = 0.0 if timer else float(10 ** rng.normal(math.log10(params.bursty_cv_median),
                                                      params.bursty_cv_log10_sigma))
        arch = str(rng.choice(archs, p=weights))
        models.append(ModelProfile(f"m{i:03d}", arch, rate, cv, costs[arch]))
    # Arrivals from their own stream: a held-out trace keeps the models and redraws the arrivals.
    rng = np.random.default_rng([params.seed, params.arrival_seed])
    times, idx = [], []
    for i, m in enumerate(models):
        rate, cv = m.rate_per_s, m.cv
        timer = cv == 0.0
        mean_iat = 1.0 / rate
        if timer:  # periodic in wall-clock time, random phase
            t = np.arange(rng.random() * mean_iat, params.duration_s, mean_iat)
        else:
            k = 1.0 / (cv * cv)
            n_guess = int(u_end / mean_iat * 1.2 + 10 * math.sqrt(u_end / mean_iat + 1) + 10)
            u = np.cumsum(rng.gamma(k, mean_iat / k, size=n_guess))
            while u[-1] < u_end:  # a long lull: draw more
                u = np.concatenate([u, u[-1] + np.cumsum(rng.gamma(k, mean_iat / k, size=n_guess))])
            u -= rng.random() * u[0]  # start inside an interval, not at an arrival
            u = u[(u >= 0) & (u < u_end)]
            t = inverse(u)
        times.append(t)
        idx.append(np.full(len(t), i, dtype=np.int32))
    all_t = np.concatenate(times) if times else np.zeros(0)
    all_i = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int32)
    order = np.argsort(all_t, kind="stable")
    return Workload(params, models, all_t[order], all_i[order])


def describe(w: Workload) -> dict:
    """The statistics the generator targets, measured on what it generated."""
    daily = np.array([m.rate_per_s * 86400 for m in w.models])
    counts = np.bincount(w.model_idx, minlength=len(w.models)) if w.n else np.zeros(len(w.models))
    top = np.sort(counts)[::-1]
    top_share = float(top[: max(1, len(top) // 5)].sum() / max(1, top.sum()))
    cvs = []
    for i in range(len(w.models)):
        t = w.times[w.model_idx == i]
        if len(t) >= 10:
            d = np.diff(t)
            cvs.append(float(d.std() / d.mean()))
    hours = np.bincount((w.times // 3600).astype(int), minlength=int(math.ceil(w.params.duration_s / 3600)))
    return {
        "models": len(w.models),
        "requests": int(w.n),
        "share_at_most_hourly": float((daily <= 24).mean()),
        "share_at_most_per_minute": float((daily <= 1440).mean()),
        "rate_orders_of_magnitude": float(np.log10(daily.max() / daily.min())) if len(daily) else 0.0,
        "top20pct_share_of_requests": top_share,
        "share_cv_above_1": float(np.mean(np.array(cvs) > 1)) if cvs else 0.0,
        "timer_models": int(sum(m.cv == 0 for m in w.models)),
        "peak_to_trough_hourly": float(hours.max() / max(1, hours.min())) if len(hours) else 0.0,
    }
