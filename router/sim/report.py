"""Run the packing comparison and write its results into docs/packing.md
(between the `sim-results` markers) and a plot next to it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import PlatformParams, Result, Setup, Simulation
from .workload import ModelCost, Workload, WorkloadParams, describe, generate

# Measured here with bench/bench_platform.py (emulator, sim TEE, 2 cores); --costs reads a newer run.
MEASURED = {
    "cold_start_s": 0.255,
    "models": {
        "digits": ModelCost(exec_s=0.005, load_s=0.003, size_mb=0.31),
        "mobilenetv2": ModelCost(exec_s=0.011, load_s=0.040, size_mb=13.3),
        "densenet121": ModelCost(exec_s=0.060, load_s=0.092, size_mb=30.2),
        "resnet50": ModelCost(exec_s=0.079, load_s=0.403, size_mb=97.3),
    },
}

BEGIN, END = "<!-- sim-results:begin -->", "<!-- sim-results:end -->"


def load_costs(path: Path | None) -> tuple[float, dict[str, ModelCost]]:
    if path is None:
        return MEASURED["cold_start_s"], dict(MEASURED["models"])  # type: ignore[return-value,call-overload]
    d = json.loads(path.read_text())
    models = {k: ModelCost(float(v["exec_s"]), float(v["load_s"]), float(v["size_mb"])) for k, v in d["models"].items()}
    return float(d["cold_start_s"]), models


@dataclass
class Scenario:
    name: str
    workload: WorkloadParams
    platform: PlatformParams
    models_per_pack: int = 50
    pool_size: int = 5
    cache_mb: tuple[float, ...] = (1024.0, 512.0)
    exec_scale: float = 1.0
    note: str = ""
    results: list[Result] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def setups(self) -> list[Setup]:
        return [
            Setup("one action per model", "per-model", cache_models=1),
            Setup("prototype (FnPacker)", "prototype", cache_models=1, pool_size=self.pool_size,
                  models_per_pack=self.models_per_pack, poll=True),
        ] + [Setup(f"ours, {mb / 1024:g} GB budget" if mb >= 1024 else f"ours, {mb:g} MB budget", "sesemi",
                   cache_mb=mb, pool_size=self.pool_size, models_per_pack=self.models_per_pack)
             for mb in self.cache_mb]


def run(sc: Scenario, costs: dict[str, ModelCost]) -> Workload:
    t0 = time.time()
    scaled = {k: replace(c, exec_s=c.exec_s * sc.exec_scale) for k, c in costs.items()}
    w = generate(sc.workload, scaled)
    sc.stats = describe(w)
    sc.results = [Simulation(w, s, sc.platform).run() for s in sc.setups()]
    sc.seconds = time.time() - t0
    return w


def scenarios(cold_start_s: float) -> list[Scenario]:
    base_w = WorkloadParams(n_models=200)
    base_p = PlatformParams(cold_start_s=cold_start_s)
    return [
        Scenario("main", base_w, base_p, note="measured costs; 200 models in 4 packs of 50, 5 actions per pack"),
        Scenario("exec x4", base_w, base_p, exec_scale=4.0,
                 note="execution 4x slower (e.g. enclave overhead on real SGX; not measured here)"),
        Scenario("cold start 2 s", base_w, replace(base_p, cold_start_s=2.0),
                 note="hypothetical 2 s cold start (enclave creation + attestation on hardware; not measured)"),
        Scenario("smaller packs", replace(base_w, n_models=100), base_p, models_per_pack=25,
                 note="100 models in 4 packs of 25"),
    ]


def _fmt_table(sc: Scenario) -> list[str]:
    base = sc.results[0]
    lines = ["| policy | failed | cold-start rate | container starts | model loads | p50 ms | p99 ms "
             "| billed GB-s | reserved GB-h | mean containers |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sc.results:
        rel = (f" ({r.billed_gbs / base.billed_gbs:.2f}x)", f" ({r.reserved_gbs / base.reserved_gbs:.2f}x)") \
            if r is not base else ("", "")
        lines.append(f"| {r.label} | {r.failed} | {100 * r.cold_rate:.3f}% | {r.container_starts} "
                     f"| {100 * r.load_rate:.2f}% | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.billed_gbs:,.0f}{rel[0]} "
                     f"| {r.reserved_gbs / 3600:,.0f}{rel[1]} | {r.mean_containers:.1f} |")
    return lines


def plot(main: Scenario, w: Workload, out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    minutes = np.bincount((w.times // 60).astype(int), minlength=int(w.params.duration_s // 60))
    ax[0, 0].plot(np.arange(len(minutes)) / 60, minutes, lw=0.5, color="#555")
    ax[0, 0].set(title=f"workload: {w.n:,} requests, {len(w.models)} models", xlabel="hour",
                 ylabel="requests per minute")
    labels = [r.label.replace(" (FnPacker)", "\n(FnPacker)").replace("one action per model", "one action\nper model")
              .replace(", ", ",\n") for r in main.results]
    colors = ["#888", "#d08c2c", "#2c7fb8", "#7fcdbb"][:len(main.results)]
    ax[0, 1].bar(labels, [100 * r.cold_rate for r in main.results], color=colors)
    for i, r in enumerate(main.results):
        ax[0, 1].text(i, 100 * r.cold_rate, f"{100 * r.cold_rate:.3f}%\n{r.failed} failed", ha="center",
                      va="bottom", fontsize=8)
    ax[0, 1].set(title="cold-start rate (requests that waited for a new container)", ylabel="% of served")
    ax[0, 1].margins(y=0.25)
    for r, c in zip(main.results, colors):
        xs = np.sort(r.latencies_s) * 1e3
        ax[1, 0].plot(xs, np.linspace(0, 1, len(xs)), label=r.label, color=c)
    ax[1, 0].set(xscale="log", title="latency CDF (served requests)", xlabel="ms", ylabel="fraction")
    ax[1, 0].set_ylim(0.9, 1.0005)
    ax[1, 0].legend(fontsize=8, loc="lower right")
    base = main.results[0]
    x = np.arange(len(main.results))
    ax[1, 1].bar(x - 0.18, [r.billed_gbs / base.billed_gbs for r in main.results], 0.36, label="billed GB-s",
                 color="#9ecae1")
    ax[1, 1].bar(x + 0.18, [r.reserved_gbs / base.reserved_gbs for r in main.results], 0.36,
                 label="reserved GB-s (containers alive)", color="#3182bd")
    ax[1, 1].set_xticks(x, labels)
    ax[1, 1].axhline(1, color="#444", lw=0.8)
    top = max(max(r.billed_gbs / base.billed_gbs, r.reserved_gbs / base.reserved_gbs) for r in main.results)
    ax[1, 1].set(title="cost relative to one action per model", ylim=(0, top * 1.3))
    ax[1, 1].legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def render(scs: list[Scenario], costs: dict[str, ModelCost], cold_start_s: float, image: str | None,
           source: str) -> str:
    main = scs[0]
    s = main.stats
    wp = main.workload
    lines = [BEGIN, "",
             f"Generated by `python -m router.sim` ({source}); seed {wp.seed}. "
             f"Simulated in {sum(x.seconds for x in scs):.0f} s.", "",
             "### Workload (main scenario), as generated", "",
             "| statistic | target (source) | generated |", "| --- | --- | ---: |",
             f"| functions invoked at most once per hour | 45% (paper) | {100 * s['share_at_most_hourly']:.0f}% |",
             f"| functions invoked at most once per minute | 81% (paper) | {100 * s['share_at_most_per_minute']:.0f}% |",
             f"| spread of mean rates | ~8 orders of magnitude (paper; capped here at {wp.max_rate_per_s:g}/s) "
             f"| {s['rate_orders_of_magnitude']:.1f} orders |",
             f"| requests from the busiest 20% of models | heavy-tailed (paper: 18.6% of apps make 99.6%) "
             f"| {100 * s['top20pct_share_of_requests']:.1f}% |",
             f"| timer-like (periodic) models | 16% (paper's trigger mix) | {s['timer_models']} of {s['models']} |",
             f"| bursty models (inter-arrival CV > 1, of those with >= 10 requests) | most (assumption) "
             f"| {100 * s['share_cv_above_1']:.0f}% |",
             f"| busiest / quietest hour | diurnal (paper's Fig. 3; 2x assumed) | {s['peak_to_trough_hourly']:.2f} |",
             f"| requests in {wp.duration_s / 3600:g} h | | {s['requests']:,} |", "",
             "### Costs used (measured here unless scaled)", "",
             f"Cold start {cold_start_s * 1e3:.0f} ms; keep-alive {main.platform.keep_alive_s:g} s; "
             f"{main.platform.container_concurrency} activations per container.", "",
             "| model | execution ms | model load ms | file MB |", "| --- | ---: | ---: | ---: |"]
    for k, c in costs.items():
        lines.append(f"| {k} | {c.exec_s * 1e3:.0f} | {c.load_s * 1e3:.0f} | {c.size_mb:.1f} |")
    for sc in scs:
        lines += ["", f"### Scenario: {sc.name}", "", f"{sc.note}; {sc.stats['requests']:,} requests.", ""]
        lines += _fmt_table(sc)
    if image:
        lines += ["", f"![packing simulation]({image})"]
    lines += ["", END]
    return "\n".join(lines)


def write(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Packing\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + section + tail)


def results_json(scs: list[Scenario]) -> dict[str, Any]:
    return {sc.name: {"note": sc.note, "workload": asdict(sc.workload), "platform": asdict(sc.platform),
                      "exec_scale": sc.exec_scale, "stats": sc.stats, "results": [r.row() for r in sc.results]}
            for sc in scs}
