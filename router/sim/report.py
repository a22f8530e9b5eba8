"""Run the packing comparison and write its results into docs/packing.md
(between the `sim-results` markers) and a plot next to it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sesemi import packplan

from .engine import PlatformParams, Result, Setup, Simulation
from .workload import ModelCost, Workload, WorkloadParams, describe, generate

# The planner is fitted on one day's arrivals and judged on another day's (the
# same models, arrivals drawn with another seed): it is not scored on the trace it saw.
FIT_SEED, HELD_OUT_SEED = 0, 1
PLAN_LABEL = "planner's plan"
# Goals on the held-out trace, relative to one action per model (docs/packing.md).
GOALS = {"billed": 1.0, "cold_start_rate": 0.0005, "p99": 1.1, "failed": 0, "reserved": 0.5}

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
    plan: dict[str, Any] | None = None
    targets: packplan.Targets = field(default_factory=packplan.Targets)
    variants: list[tuple[str, Result]] = field(default_factory=list)  # other targets' plans, for the front

    def setups(self) -> list[Setup]:
        return [
            Setup("one action per model", "per-model", cache_models=1),
            Setup("prototype (FnPacker)", "prototype", cache_models=1, pool_size=self.pool_size,
                  models_per_pack=self.models_per_pack, poll=True),
        ] + [Setup(f"ours, {mb / 1024:g} GB budget" if mb >= 1024 else f"ours, {mb:g} MB budget", "sesemi",
                   cache_mb=mb, pool_size=self.pool_size, models_per_pack=self.models_per_pack)
             for mb in self.cache_mb] + ([Setup(PLAN_LABEL, "plan", plan=self.plan)] if self.plan else [])


def planner(w: Workload, platform: PlatformParams, targets: packplan.Targets | None = None,
            progress: Callable[[str], None] | None = None) -> packplan.Planner:
    """The planner for the models of `w`, fitted on `w`'s arrivals; the
    footprints and times the simulator uses are the planner's inputs."""
    specs = [packplan.ModelSpec(m.model_id, m.cost.size_mb, m.cost.size_mb * platform.footprint_factor,
                                m.cost.load_s, m.cost.exec_s) for m in w.models]
    order = np.argsort(w.model_idx, kind="stable")
    bounds = np.searchsorted(w.model_idx[order], np.arange(len(w.models) + 1))
    times = {m.model_id: w.times[order[bounds[i]:bounds[i + 1]]].tolist() for i, m in enumerate(w.models)}
    spec = packplan.PlatformSpec(keep_alive_s=platform.keep_alive_s, cold_start_s=platform.cold_start_s,
                                 concurrency=platform.container_concurrency, base_mb=platform.base_mb)
    return packplan.Planner(specs, times, w.params.duration_s, spec, targets or packplan.Targets(), progress)


def fit_plan(w: Workload, platform: PlatformParams, targets: packplan.Targets | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    return planner(w, platform, targets, progress).plan()


# Other targets for the planner, each judged on the held-out trace: the trade-off front.
FRONT_TARGETS = [packplan.Targets(cold_start_rate=c, reserved_ratio=10.0, billed_ratio=b, p99_ratio=q)
                 for c, b, q in ((0.01, 1.0, 1.1), (0.002, 1.0, 1.1), (0.001, 1.0, 1.1), (0.0002, 1.0, 1.1),
                                 (0.0001, 1.0, 1.5), (0.00005, 1.1, 2.0), (0.00002, 1.5, 3.0))]


def run(sc: Scenario, costs: dict[str, ModelCost], front: bool = False) -> Workload:
    """Fit the plan on one day, judge every policy on another (held out)."""
    t0 = time.time()
    scaled = {k: replace(c, exec_s=c.exec_s * sc.exec_scale) for k, c in costs.items()}
    fit = generate(replace(sc.workload, arrival_seed=FIT_SEED), scaled)
    w = generate(replace(sc.workload, arrival_seed=HELD_OUT_SEED), scaled)
    fitted = planner(fit, sc.platform, sc.targets)
    sc.plan = fitted.plan()
    sc.stats = describe(w)
    sc.results = [Simulation(w, s, sc.platform).run() for s in sc.setups()]
    if front:
        for t in FRONT_TARGETS:
            label = (f"v{len(sc.variants) + 1}: plan, cold <= {100 * t.cold_start_rate:g}%, "
                     f"billed <= {t.billed_ratio:g}x, p99 <= {t.p99_ratio:g}x")
            sc.variants.append((label, Simulation(w, Setup(label, "plan", plan=fitted.plan(t)), sc.platform).run()))
            print(f"[{sc.name}] {label}: {_brief(sc.variants[-1][1])}", flush=True)
    sc.seconds = time.time() - t0
    return w


def _brief(r: Result) -> str:
    return (f"failed {r.failed}, cold {100 * r.cold_rate:.3f}%, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
            f"billed {r.billed_gbs:,.0f} GB-s, reserved {r.reserved_gbs / 3600:,.0f} GB-h")


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
    colors = ["#888", "#d08c2c", "#2c7fb8", "#7fcdbb", "#c51b8a"][:len(main.results)]
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


def goals(sc: Scenario, r: Result) -> dict[str, tuple[bool, str]]:
    """Each goal on the held-out trace: met, and the figure."""
    base = sc.results[0]
    b, p, res = r.billed_gbs / base.billed_gbs, r.p99_ms / base.p99_ms, r.reserved_gbs / base.reserved_gbs
    return {"billed GB-s <= 1.0x": (b <= GOALS["billed"], f"{b:.3f}x"),
            "cold-start rate <= 0.05%": (r.cold_rate <= GOALS["cold_start_rate"], f"{100 * r.cold_rate:.3f}%"),
            "p99 <= 1.1x": (p <= GOALS["p99"], f"{p:.2f}x"),
            "no failed requests": (r.failed == 0, f"{r.failed} failed"),
            "reserved GB-h <= 0.5x": (res <= GOALS["reserved"], f"{res:.2f}x")}


def _goals_table(scs: list[Scenario]) -> list[str]:
    names = list(goals(scs[0], scs[0].results[0]))
    lines = ["| scenario | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for sc in scs:
        r = next(x for x in sc.results if x.label == PLAN_LABEL)
        g = goals(sc, r)
        lines.append(f"| {sc.name} | " + " | ".join(f"{'met' if ok else '**missed**'} ({v})"
                                                   for ok, v in g.values()) + " |")
    return lines


def _plan_summary(sc: Scenario) -> str:
    plan = sc.plan or {}
    packs = [p for p in plan.get("packs", []) if len(p["models"]) > 1 or p.get("bursts") is None]
    alone = [p for p in plan.get("packs", []) if p.get("bursts") is not None]
    held = sum(1 for p in alone if p["bursts"] != "scale")
    est = plan.get("estimate", {})
    parts = [f"{len(p['models'])} models in `{p['name']}` ({p['memory_mb']} MB, budget {p['budget_mb']} MB, "
             f"{p['pool_size']} actions)" for p in packs]
    return (f"The plan (fitted on the other day): {'; '.join(parts) or 'no pack'}; {len(alone)} models alone at "
            f"their own memory limit, {held} of them with their scale-out bounded by the router. Its own estimate on the "
            f"day it saw: billed {est.get('billed_ratio', 0):.3f}x, cold-start rate "
            f"{100 * est.get('cold_start_rate', 0):.3f}%, reserved {est.get('reserved_ratio', 0):.2f}x"
            + (f"; targets it could not meet: {', '.join(est['unmet'])}" if est.get("unmet") else "") + ".")


def plot_front(main: Scenario, out: Path) -> bool:
    """Billed GB-s against the cold-start rate and the p99, for every policy
    and the planner under other targets; the non-dominated points joined."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    base = main.results[0]
    pts = [(r.label, r, True) for r in main.results] + [(lab, r, False) for lab, r in main.variants]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    marks = {"one action per model": ("s", "#444"), "prototype (FnPacker)": ("^", "#d08c2c"),
             PLAN_LABEL: ("*", "#c51b8a")}
    for ax, (xname, xof) in zip(axes, (("cold-start rate (%)", lambda r: 100 * r.cold_rate),
                                       ("p99 / one action per model", lambda r: r.p99_ms / base.p99_ms))):
        xy = sorted((xof(r), r.billed_gbs / base.billed_gbs) for _, r, _ in pts if r.failed == 0)
        front, lowest = [], float("inf")
        for x, y in xy:
            if y < lowest:
                front.append((x, y))
                lowest = y
        ax.step(*zip(*front), where="post", color="#bbb", lw=1, zorder=1, label="non-dominated (no failures)")
        for lab, r, main_policy in pts:
            m, c = marks.get(lab, ("o", "#2c7fb8") if main_policy else ("o", "#bbb"))
            ax.scatter(xof(r), r.billed_gbs / base.billed_gbs, marker=m, color=c, s=160 if m == "*" else 45,
                       zorder=4 if main_policy else 3, edgecolor="k" if main_policy else "#888", linewidth=0.5)
            text = (lab + (f" ({r.failed} failed)" if r.failed else "")) if main_policy else lab.split(":")[0]
            ax.annotate(text, (xof(r), r.billed_gbs / base.billed_gbs), fontsize=7,
                        xytext=(5, -9 if main_policy and m == "*" else 3), textcoords="offset points",
                        color="#000" if main_policy else "#777")
        ax.axhline(1.0, color="#444", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_yticks([0.9, 1, 1.25, 1.5, 2, 3], ["0.9", "1", "1.25", "1.5", "2", "3"])
        ax.minorticks_off()
        if "cold" in xname:
            ax.axvline(100 * GOALS["cold_start_rate"], color="#c51b8a", lw=0.8, ls=":")
            ax.set_xscale("log")
        else:
            ax.axvline(GOALS["p99"], color="#c51b8a", lw=0.8, ls=":")
        ax.set(xlabel=xname, ylabel="billed GB-s / one action per model",
               title=f"main scenario, held-out trace: billed GB-s vs {xname.split(' (')[0]}")
        ax.legend(fontsize=7, loc="upper right")
    fig.text(0.01, 0.005, "grey: the planner under other targets (v1..v7, listed under the plot); dotted: the goal; "
             "dashed: one action per model's bill", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def render(scs: list[Scenario], costs: dict[str, ModelCost], cold_start_s: float, image: str | None,
           source: str, front_image: str | None = None) -> str:
    main = scs[0]
    s = main.stats
    wp = main.workload
    lines = [BEGIN, "",
             f"Generated by `python -m router.sim` ({source}); models from seed {wp.seed}; the planner fitted "
             f"on arrivals of seed {FIT_SEED}, every policy judged on arrivals of seed {HELD_OUT_SEED} "
             f"(held out). Simulated in {sum(x.seconds for x in scs):.0f} s.", "",
             "### Goals, planner's plan on the held-out trace", ""] + _goals_table(scs) + [
             "", "Ratios are to one action per model on the same held-out trace.", "",
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
        lines += ["", _plan_summary(sc)]
    if front_image and scs[0].variants:
        lines += ["", "### Trade-off (main scenario, held-out trace)", "",
                  "The planner under other targets (grey, v1..v7 below), beside the policies above; the line "
                  "joins the points no other beats on both axes (billed GB-s on a log scale).", "",
                  f"![billed GB-s against cold-start rate and p99]({front_image})", ""]
        lines += _fmt_table(Scenario(scs[0].name, scs[0].workload, scs[0].platform,
                                     results=[scs[0].results[0]] + [r for _, r in scs[0].variants]))
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
                      "exec_scale": sc.exec_scale, "stats": sc.stats, "results": [r.row() for r in sc.results],
                      "goals": {k: {"met": ok, "value": v} for k, (ok, v) in
                                goals(sc, next(r for r in sc.results if r.label == PLAN_LABEL)).items()},
                      "plan": sc.plan, "front": [r.row() for _, r in sc.variants]}
            for sc in scs}
