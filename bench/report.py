"""Write docs/performance.md and its plots from bench/results/*.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# A smoke run (make test) points both elsewhere: it must not overwrite the committed report.
RESULTS = Path(os.environ.get("SESEMI_BENCH_RESULTS") or REPO / "bench" / "results")
DOCS = Path(os.environ.get("SESEMI_BENCH_DOCS") or REPO / "docs")
IMG = DOCS / "img"

# Goals of issue 15: SeSeMI / plaintext server <= 1.00 for every model; SeSeMI / bare invoke below.
GOALS_PLAIN = {"mobilenetv2": 1.00, "resnet50": 1.00, "densenet121": 1.00}
GOALS_BARE = {"mobilenetv2": 1.15, "resnet50": 1.03, "densenet121": 1.03}
GOAL_COLD = 1.05


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def latency_section(d: dict) -> list[str]:
    rows = ["| model | input | (i) bare invoke p50 / p99 | (ii) plaintext server p50 / p99 | (iii) SeSeMI p50 / p99 "
            "| (iii)/(ii) p50 | goal | (iii)/(i) p50 | goal |", "|---|---|---|---|---|---|---|---|---|"]
    models = d["models"]
    for m, v in models.items():
        gp, gb = GOALS_PLAIN.get(m), GOALS_BARE.get(m)
        rp, rb = v["ratio_sesemi_plain_p50"], v["ratio_sesemi_bare_p50"]
        rows.append(
            f"| {m} | {v['input_bytes']:,} B | {v['bare']['p50_ms']:.2f} / {v['bare']['p99_ms']:.2f} ms "
            f"| {v['plain']['p50_ms']:.2f} / {v['plain']['p99_ms']:.2f} ms "
            f"| {v['sesemi']['p50_ms']:.2f} / {v['sesemi']['p99_ms']:.2f} ms | {rp:.3f} "
            f"| {f'≤ {gp} ({mark(rp <= gp)})' if gp else '—'} | {rb:.3f} "
            f"| {f'≤ {gb} ({mark(rb <= gb)})' if gb else '—'} |")
    big = next((m for m in ("mobilenetv2", "resnet50") if m in models), None)
    lines = ["## (a) Warm latency", "",
             "Measured side by side in one run, interleaved call by call (a fresh random order each iteration) so "
             "drift hits all three alike; "
             "batch 1, one interpreter thread everywhere (`SESEMI_BENCH_INTERP_THREADS`).", ""] + rows
    if big:
        b = models[big]["breakdown_ms"]
        lines += ["", f"Where the secure path's own work goes ({big} input, in-process, p50):", "",
                  "| step | ms |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in b.items()]
    p50_bars(models, (("bare", "(i) bare invoke"), ("plain", "(ii) plaintext server"),
                      ("sesemi", "(iii) SeSeMI encrypted")), "Warm latency, batch 1", "perf-latency.png")
    lines += ["", "![warm latency](img/perf-latency.png)", ""]
    return lines + invoke_section(models)


def p50_bars(models: dict, series: tuple[tuple[str, str], ...], title: str, png: str) -> None:
    """Grouped bars of each series' p50 per model, log scale."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(models)
    w = 0.8 / len(series)
    for i, (k, label) in enumerate(series):
        ax.bar([j + (i - (len(series) - 1) / 2) * w for j in range(len(names))],
               [models[n][k]["p50_ms"] for n in names], w, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("p50 (ms, log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / png, dpi=110)
    plt.close(fig)


def invoke_section(models: dict) -> list[str]:
    """The action's own invoke (its /stats) beside the bare invoke of the same span, same run."""
    models = {m: v for m, v in models.items() if "action_invoke" in v}
    if not models:
        return []
    lines = ["### The action's invoke against the bare invoke", "",
             "The same span (set_tensor + invoke + get_tensor, one interpreter thread) timed inside the action "
             "(`/stats` → `recent_invoke`, over the benchmark's requests) and in the benchmark's process (i). "
             "What the action adds around the invoke is the SeSeMI end-to-end time minus the action's invoke.", "",
             "| model | (i) bare invoke p50 | action's invoke p50 | action / bare | action's /run handling p50 "
             "| (iv) HTTP floor p50 | (iii) SeSeMI p50 | (iii) − action's invoke | floor: ((i) + (iv)) / (i) "
             "| protocol floor: ((i) + (v)) / (i) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    null = models.get("null224")
    # (v): all SeSeMI adds on a 224x224x3 request, measured with a model that computes next to nothing.
    proto = null["sesemi"]["p50_ms"] - null["bare"]["p50_ms"] if null else None
    for m, v in models.items():
        a, b, s = v["action_invoke"]["p50_ms"], v["bare"]["p50_ms"], v["sesemi"]["p50_ms"]
        run = v.get("action_run", {}).get("p50_ms")
        echo = v.get("echo", {}).get("p50_ms")
        pf = f"{(b + proto) / b:.3f}" if proto is not None and v["input_bytes"] == null["input_bytes"] else "—"
        lines.append(f"| {m} | {b:.2f} ms | {a:.2f} ms | {a / b:.3f} | {f'{run:.2f} ms' if run else '—'} "
                     f"| {f'{echo:.2f} ms' if echo else '—'} | {s:.2f} ms | {s - a:.2f} ms "
                     f"| {f'{(b + echo) / b:.3f}' if echo else '—'} | {pf} |")
    lines += ["", "(iv) is the transport floor: the same request bytes posted with the same client library to the "
              "action's own HTTP layer (bench/echo_server.py), which reads the body and answers a body of the "
              "SeSeMI response's size without doing anything. No server on this transport can answer faster than "
              "(i) + (iv); where that ratio is above a goal, the goal is out of reach on this transport."]
    if proto is not None:
        lines += ["", f"(v) = {proto:.2f} ms is everything SeSeMI adds to a 224×224×3 request when the model costs "
                  "nothing: null224 (global average pooling and a 1000-way dense layer, tools/make_bench_models.py) "
                  "through the whole secure path — SDK encryption and encoding, the HTTP transport, the JSON "
                  "`/run` protocol's parse and base64, AES-GCM both ways, the response — minus its bare invoke, "
                  "same run. It is measured with every cache warm from the previous request (after a long invoke "
                  "the same steps run slower: docs/performance.md, \"Where the time goes\"), and in its own "
                  "block of the run, so it carries that block's noise (a model's measured ratio can land a "
                  "hundredth below it). Where the protocol floor is at or above a goal, no change inside the "
                  "action meets it without changing the protocol or the transport."]
    # The floor bar: what no server on this transport can beat, bare invoke + HTTP echo.
    with_floor = {m: {**v, "floor": {"p50_ms": v["bare"]["p50_ms"] + v["echo"]["p50_ms"]}}
                  for m, v in models.items() if "echo" in v}
    p50_bars(with_floor, (("bare", "(i) bare invoke"), ("action_invoke", "action's invoke (/stats)"),
                          ("floor", "(i) + (iv) HTTP floor"), ("sesemi", "(iii) SeSeMI end to end")),
             "Invoke inside the action vs bare invoke, batch 1", "perf-invoke.png")
    return lines + ["", "![invoke inside the action](img/perf-invoke.png)", ""]


def cold_section(d: dict) -> list[str]:
    models = d["models"]
    lines = ["## (b) Cold start", "",
             "Process start to first answer, median of the repetitions. SeSeMI's first request includes "
             "one key-service round trip for both keys, reading and decrypting the sealed model chunk by chunk, "
             "building the interpreter and the first inference; the pack digest is computed on a worker "
             "thread beside the decryption (sesemi/background_digest.py). SeSeMI runs its code as the images "
             "ship it, with checked-hash .pyc compiled at build time (bench_cold.code_tree, as "
             "occlum_instance/build.sh does); \"no .pyc\" is the same action compiling its own modules on every "
             "start (PYTHONDONTWRITEBYTECODE=1), as the images did before, measured in the same run.", "",
             "| model | SeSeMI total | process start | /init (measure + attest) | key fetch | read + decrypt "
             "| interpreter build | first inference | plaintext total | ratio | goal | SeSeMI, no .pyc "
             "| ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, v in models.items():
        s, p = v["sesemi"], v["plain"]
        goal = f"≤ {GOAL_COLD} ({mark(v['ratio_total'] <= GOAL_COLD)})"
        c = v.get("sesemi_no_pyc")
        pre = f"{c['total_s'] * 1e3:.0f} ms | {v['ratio_no_pyc_total']:.2f}" if c else "— | —"
        lines.append(f"| {m} | {s['total_s'] * 1e3:.0f} ms | {s['process_start_s'] * 1e3:.0f} | "
                     f"{s['init_s'] * 1e3:.0f} ({s['measure_s'] * 1e3:.0f} + {s['attest_s'] * 1e3:.0f}) | "
                     f"{s['key_fetch_s'] * 1e3:.1f} | {s['read_and_decrypt_s'] * 1e3:.1f} | "
                     f"{s['interpreter_build_s'] * 1e3:.1f} | {s['first_inference_s'] * 1e3:.1f} | "
                     f"{p['total_s'] * 1e3:.0f} ms | {v['ratio_total']:.2f} | {goal} | {pre} |")
    imp = d.get("imports")
    if imp:
        lines += ["", f"The action's start-up imports ({imp['reps']} interleaved interpreter starts, wall time above a "
                  f"bare interpreter start of {imp['bare_interpreter_s'] * 1e3:.0f} ms): "
                  f"**{imp['imports_pyc_s'] * 1e3:.0f} ms** as the images ship it (checked-hash .pyc), "
                  f"{imp['imports_no_pyc_s'] * 1e3:.0f} ms compiling from source."]
        by = imp.get("by_package_ms") or {}
        if by:
            total = sum(by.values())
            top = list(by.items())[:10]
            lines += ["", f"What they are made of (`python -X importtime`, self time by top-level package, with .pyc; "
                      f"{total:.0f} ms in all, `-X importtime` adds its own overhead):", "",
                      "| package | ms | share |", "|---|---|---|"]
            lines += [f"| {k} | {v:.1f} | {100 * v / total:.0f} % |" for k, v in top]
            lines.append(f"| (the rest) | {total - sum(v for _, v in top):.1f} | "
                         f"{100 * (total - sum(v for _, v in top)) / total:.0f} % |")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(models)
    parts = [("process_start_s", "process start"), ("init_s", "/init: measure + attest"),
             ("key_fetch_s", "key fetch"), ("read_and_decrypt_s", "read + decrypt"),
             ("interpreter_build_s", "interpreter build"), ("first_inference_s", "first inference")]
    for j, n in enumerate(names):
        bottom = 0.0
        for i, (k, label) in enumerate(parts):
            val = models[n]["sesemi"][k] * 1e3
            ax.bar(j - 0.2, val, 0.38, bottom=bottom, color=f"C{i}", label=label if j == 0 else None)
            bottom += val
        ax.bar(j + 0.2, models[n]["plain"]["total_s"] * 1e3, 0.38, color="grey",
               label="plaintext server (total)" if j == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("ms")
    ax.set_title("Cold start: SeSeMI (left, by phase) vs plaintext (right)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "perf-cold.png", dpi=110)
    plt.close(fig)
    return lines + ["", "![cold start](img/perf-cold.png)", ""]


def concurrency_section(d: dict) -> list[str]:
    lines = ["## (c) Concurrency", "",
             "Concurrent clients (threads in the benchmark process, each with its own connection) against one "
             "action, back to back for a fixed time, for several (interpreters per model × threads per "
             "interpreter) settings. The 2-client goals are judged on the paired rounds below each table, "
             "not on its single 1- and 2-client rows: on this shared VM one measurement of each moved the "
             "ratio by ±0.2 between runs.", ""]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m, configs in d["models"].items():
        lines += [f"**{m}**", "", "| setting | clients | throughput (req/s) | p50 (ms) | p99 (ms) | errors "
                  "| CPU ms/request: clients + action | cores busy |",
                  "|---|---|---|---|---|---|---|---|"]
        probe = configs.get("in_process")
        paired = configs.get("two_vs_one")
        configs = {k: v for k, v in configs.items() if k not in ("in_process", "two_vs_one")}
        for cname, c in configs.items():
            for r in c["levels"]:
                cpu = (f"{r['client_cpu_ms_per_request']:.2f} + {r['action_cpu_ms_per_request']:.2f} | "
                       f"{r['cpu_utilisation_cores']:.2f}") if "cpu_utilisation_cores" in r else "— | —"
                lines.append(f"| pool {c['pool_size']} × {c['interp_threads']} thread(s) | {r['clients']} | "
                             f"{r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
                             f"| {cpu} |")
            xs = [r["clients"] for r in c["levels"]]
            label = f"{m} pool {c['pool_size']}×{c['interp_threads']}t"
            axes[0].plot(xs, [r["throughput_rps"] for r in c["levels"]], marker="o", label=label)
            axes[1].plot(xs, [r["p99_ms"] for r in c["levels"]], marker="o", label=label)
        lines.append("")
        default = configs.get("pool2_threads1")
        if default:
            l1, l2 = default["levels"][0], default["levels"][1]
            ratio = l2["throughput_rps"] / l1["throughput_rps"]
            lines.append(f"2-client / 1-client throughput with the default (2 interpreters × 1 thread): "
                         f"**{ratio:.2f}×**.")
            if probe:
                goal = 0.95 * probe["ratio"]
                lines.append(f"In-process limit, same run: 2 interpreters in 2 threads / 1 = {probe['ratio']:.2f}× "
                             f"({probe['one_rps']:.1f} → {probe['two_rps']:.1f} invokes/s, no HTTP, no crypto); "
                             f"goal ≥ 0.95 × that = {goal:.2f}×: {mark(ratio >= goal)}.")
            q = l2["p99_ms"] / l2["p50_ms"]
            lines += [f"p99 / p50 at 2 clients: {q:.2f} (goal ≤ 1.5: {mark(q <= 1.5)}).", ""]
        if paired:
            rs = paired["rounds"]
            goal = 0.95 * paired["in_process_ratio_median"]
            q = paired["two_p99_ms"] / paired["two_p50_ms"]
            lines += [f"**The goals, judged on {len(rs)} paired rounds** of {paired['seconds']:g} s per measurement "
                      "(each round: the in-process 2-interpreter ratio, then 1 and 2 clients through the default "
                      "action, back to back):", "",
                      "| round | in-process 2 / 1 | through the action 2 / 1 | 1 client req/s | 2 clients req/s "
                      "| 2 clients p50 / p99 ms | p99 / p50: 2 clients | p99 / p50: 2 interpreters in-process |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {i + 1} | {r['in_process_ratio']:.2f}× | {r['ratio']:.2f}× | {r['one_rps']:.1f} "
                      f"| {r['two_rps']:.1f} | {r['two_p50_ms']:.1f} / {r['two_p99_ms']:.1f} "
                      f"| {r['two_p99_ms'] / r['two_p50_ms']:.2f} "
                      f"| {r['in_process_p99_over_p50']:.2f} |" if "in_process_p99_over_p50" in r else
                      f"| {i + 1} | {r['in_process_ratio']:.2f}× | {r['ratio']:.2f}× | {r['one_rps']:.1f} "
                      f"| {r['two_rps']:.1f} | {r['two_p50_ms']:.1f} / {r['two_p99_ms']:.1f} "
                      f"| {r['two_p99_ms'] / r['two_p50_ms']:.2f} | — |"
                      for i, r in enumerate(rs)]
            lines += ["", f"Median through the action **{paired['ratio_median']:.2f}×** against 0.95 × the median "
                      f"in-process {paired['in_process_ratio_median']:.2f}× = {goal:.2f}×: "
                      f"{mark(paired['ratio_median'] >= goal)}. p99 / p50 at 2 clients over all rounds' requests: "
                      f"**{q:.2f}** (goal ≤ 1.5: {mark(q <= 1.5)})."
                      + (f" The same tail with no server at all — two interpreters invoking in this process, "
                         f"median over the rounds: p99 / p50 {paired['in_process_p99_over_p50_median']:.2f}."
                         if "in_process_p99_over_p50_median" in paired else ""), ""]
            if "serial_fraction" in paired:
                f = paired["serial_fraction"]
                lines += [f"What bounds it: at 1 client the action spends {paired['action_cpu_ms_per_request']:.2f} ms "
                          f"of CPU per request, of which the invoke (its p50, /stats) is "
                          f"{paired['action_invoke_p50_ms']:.2f} ms and runs without the GIL; the other "
                          f"{100 * f:.0f} % (HTTP, JSON and base64 of the ~800 KB body, AES-GCM, the response) "
                          "holds it, so two request threads serialise on that share. Amdahl's bound for two "
                          f"threads with that serial fraction: **{paired['amdahl_two_threads']:.2f}×**. An "
                          "estimate, not a bound: it sets a mean CPU time against a median invoke, and the "
                          "socket calls inside that share release the GIL. The in-process probe has no such "
                          "share.", ""]
    for ax, t in zip(axes, ("throughput (req/s)", "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(t)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(IMG / "perf-concurrency.png", dpi=110)
    plt.close(fig)
    return lines + ["![concurrency](img/perf-concurrency.png)", ""]


def packing_section(d: dict) -> list[str]:
    a, b = d["lru_fits_2"], d["capacity_1"]
    lines = ["## (d) Packing", "",
             f"One action serving a pack of 3 {d['model']} models (each sealed under its own key); "
             f"{a['requests']} requests each picking a model uniformly at random (seeded), after each model's "
             "first load. Budget that fits 2 decrypted models (LRU) vs a cache of capacity 1 (the prototype).", "",
             "| cache | budget | throughput (req/s) | p50 (ms) | p99 (ms) | reloads | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|",
             f"| LRU, fits 2 | {a['budget_mb']} MB | {a['throughput_rps']:.1f} | {a['p50_ms']:.1f} | "
             f"{a['p99_ms']:.1f} | {a['reloads']} | {a.get('peak_rss_mb', 0):.0f} |",
             f"| capacity 1 (prototype) | {b['budget_mb']} MB | {b['throughput_rps']:.1f} | {b['p50_ms']:.1f} | "
             f"{b['p99_ms']:.1f} | {b['reloads']} | {b.get('peak_rss_mb', 0):.0f} |", "",
             f"Throughput ratio: **{d['throughput_ratio']:.2f}×**; reloads {a['reloads']} vs {b['reloads']}. "
             "With uniform random choice among 3, an LRU of 2 hits about 2/3 of the time and a cache of 1 about "
             "1/3; every miss re-decrypts and rebuilds an interpreter.", ""]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["LRU fits 2", "capacity 1"], [a["throughput_rps"], b["throughput_rps"]], color=["C0", "grey"])
    for i, r in enumerate((a, b)):
        ax.text(i, r["throughput_rps"], f"{r['reloads']} reloads", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("req/s")
    ax.set_title("3 models in one action")
    fig.tight_layout()
    fig.savefig(IMG / "perf-packing.png", dpi=110)
    plt.close(fig)
    return lines + ["![packing](img/perf-packing.png)", ""]


def keyservice_section(d: dict) -> list[str]:
    lines = ["## (e) Key service", "",
             "Over HTTP on loopback, one key-service process (threads). An attestation is a nonce round trip "
             "plus evidence verification and token issue; a release returns the model key and a user's request "
             "key, each HPKE-wrapped, and writes an audit row (committed, `synchronous=FULL`).", "",
             "Attestations per second are measured over 60 calls per row: the key service limits attestation "
             "nonces to 20/s per client address (burst 200, keyservice/config.py), and the benchmark's clients "
             "share one address, so this is the service's speed inside the burst, not a sustained rate.", "",
             "| clients | sim attestations/s | key releases/s |", "|---|---|---|"]
    for k in ("clients_1", "clients_4"):
        if k in d:
            lines.append(f"| {k.split('_')[1]} | {d[k]['sim_attestations_per_s']:.0f} | "
                         f"{d[k]['key_releases_per_s']:.0f} |")
    if "dcap" in d:
        lines += ["", "DCAP quote verification (the fixture quote, dcap-qvl, file collateral, in-process): "
                  + ", ".join(f"{v:.0f}/s with {k.split('_')[1]} thread(s)" for k, v in d["dcap"].items()) + "."]
    return lines + [""]


GOALS_PQ = {"cold": 1.02, "round_trip_ms": 0.3, "releases": 0.95}


def pq_section(d: dict) -> list[str]:
    """Hybrid MLKEM768-X25519 HPKE against X25519 alone (bench/bench_pq.py)."""
    H, C = "MLKEM768-X25519", "X25519"
    cold, rel, mic, sz = d["cold"], d["release"], d["micro_us"], d["sizes"]
    rt_h, rt_c = rel["round_trip"][H], rel["round_trip"][C]
    lines = ["## (e2) Post-quantum key transport", "",
             "Hybrid MLKEM768-X25519 / HKDF-SHA256 / AES-256-GCM HPKE (the default) against X25519 alone, "
             "interleaved in one run (`.venv/bin/python bench/bench_pq.py`). The X25519 arm is the action as "
             "before (bench/classical_action.py: an X25519 enclave key, no ML-KEM check) against the same key "
             "service, started with `--insecure-allow-classical-kem` so that it serves that arm at all.", "",
             "| measure | hybrid | X25519 alone | ratio / delta | goal |", "|---|---|---|---|---|",
             f"| cold start, digits (median of {cold['reps']}) | {cold['median'][H]['total_s'] * 1e3:.0f} ms | "
             f"{cold['median'][C]['total_s'] * 1e3:.0f} ms | ×{cold['ratio_total']:.3f} (paired ×"
             f"{cold['ratio_of_paired']:.3f}) | ≤ ×{GOALS_PQ['cold']} {mark(cold['ratio_total'] <= GOALS_PQ['cold'])} |",
             f"| cold start: the action's CPU to its first answer (median) | {cold['median'][H]['cpu_s'] * 1e3:.0f} ms | "
             f"{cold['median'][C]['cpu_s'] * 1e3:.0f} ms | ×{cold['ratio_cpu']:.3f} | ≤ ×{GOALS_PQ['cold']} "
             f"{mark(cold['ratio_cpu'] <= GOALS_PQ['cold'])} |",
             f"| one key release round trip, p50 of {rel['round_trip'][H]['n']} (both boxes opened) | {rt_h['p50_ms']:.3f} ms | "
             f"{rt_c['p50_ms']:.3f} ms | {rel['round_trip_delta_ms']:+.3f} ms | ≤ +{GOALS_PQ['round_trip_ms']} ms "
             f"{mark(rel['round_trip_delta_ms'] <= GOALS_PQ['round_trip_ms'])} |",
             f"| key releases/s, 1 client ({rel['rounds']} alternating blocks of {rel['block_s']} s; ratio: median "
             f"of the pairs) | {rel['releases_per_s'][H]:.0f} | {rel['releases_per_s'][C]:.0f} | "
             f"×{rel['releases_ratio_of_pairs']:.3f} (from the interleaved calls: "
             f"×{rel['releases_ratio_interleaved_calls']:.3f}) | see the next row |",
             f"| key service CPU per release (capacity with enough clients) | "
             f"{rel['service_cpu_ms_per_release'][H]:.3f} ms | {rel['service_cpu_ms_per_release'][C]:.3f} ms | "
             f"×{rel['capacity_ratio_from_service_cpu']:.3f} releases/s | ≥ ×{GOALS_PQ['releases']} "
             f"{mark(rel['capacity_ratio_from_service_cpu'] >= GOALS_PQ['releases'])} |",
             f"| HPKE key generation (in-process, median) | {mic['keygen_' + H]:.0f} µs | {mic['keygen_' + C]:.0f} µs "
             f"| ×{mic['keygen_' + H] / mic['keygen_' + C]:.2f} | |",
             f"| HPKE seal, 32-byte key | {mic['seal_' + H]:.0f} µs | {mic['seal_' + C]:.0f} µs | "
             f"×{mic['seal_' + H] / mic['seal_' + C]:.2f} | |",
             f"| HPKE open | {mic['open_' + H]:.0f} µs | {mic['open_' + C]:.0f} µs | "
             f"×{mic['open_' + H] / mic['open_' + C]:.2f} | |", "",
             "Sizes in bytes (boxes raw, format v2: 3-byte header naming the suite, then enc and the AEAD "
             "ciphertext; JSON bodies as sent, keys and boxes in base64):", "",
             "| what | hybrid | X25519 alone |", "|---|---|---|"]
    for k, label in (("public_key", "HPKE public key (enclave's, and the key service's)"),
                     ("private_key", "HPKE private key as stored"),
                     ("owner_or_user_upload_box", "owner's model key / user's request key upload box"),
                     ("release_model_key_box", "release box: model key"),
                     ("release_request_key_box", "release box: request key"),
                     ("replica_join_secrets_box", "replica join: the service's secrets box"),
                     ("enclave_attest_request_json", "enclave attestation request (sim evidence + key)"),
                     ("release_answer_json", "key release answer (both boxes)")):
        h, c = sz[H][k], sz[C][k]
        lines.append(f"| {label} | {h} | {c if c is not None else 'refused (hybrid only)'} |")
    ka = sz["key_service_attestation_json"]
    lines.append(f"| key service's attestation answer (`ks attest`) | {ka[H]} | {ka[C]} |")
    blocks = [x for v in rel.get("releases_per_s_blocks", {}).values() for x in v]
    spread = f" (one block's rate ranged {min(blocks):.0f}–{max(blocks):.0f}/s in this run)" if blocks else ""
    return lines + ["", "The goal for releases per second is judged on the key service's own CPU per release: "
                    "that is its capacity once enough clients keep it busy, and it is measured over every block. "
                    "One client's wall-clock rate mostly measures the shared machine" + spread + "; the crypto "
                    "alone adds two hybrid seals at the service (+2 × "
                    f"{mic['seal_' + H] - mic['seal_' + C]:.0f} µs) and two hybrid opens at the enclave "
                    f"(+2 × {mic['open_' + H] - mic['open_' + C]:.0f} µs) to a release.", "",
                    "A hardware quote is a fixed ~4.6 KB whatever the key: REPORT_DATA holds "
                    "SHA-512 over the nonce and a SHA-256 of the whole key, so only the key's own bytes grow "
                    "the evidence. X25519 boxes carry the same 3-byte v2 header (format v1 boxes were 80 bytes).",
                    ""]


def memory_section(d: dict) -> list[str]:
    lines = ["## Memory", "",
             "Resident set after the first request (pool of 2 interpreters), against the plaintext server "
             "holding the same model (pool of 2). A second plaintext copy kept by the action would show as "
             "growth about one model size above the plaintext server's.", "",
             "| model | model size | action RSS (peak) | growth on load | plaintext server RSS (peak) |",
             "|---|---|---|---|---|"]
    for m, v in d["models"].items():
        lines.append(f"| {m} | {v['model_mb']:.1f} MB | {v['action_rss_mb']:.0f} ({v['action_peak_rss_mb']:.0f}) MB "
                     f"| +{v['action_growth_on_load_mb']:.0f} MB | {v['plain_rss_mb']:.0f} "
                     f"({v['plain_peak_rss_mb']:.0f}) MB |")
    return lines + [""]


def platform_section(d: dict) -> list[str]:
    lines = ["## Platform costs (through the local OpenWhisk emulator)", "",
             "The inputs of the packing simulator (docs/packing.md): cold start (waitTime + initTime of a cold "
             "activation), model load in a warm container, warm execution (median), per model.", "",
             "| model | size | cold start | of which /init | model load | execution |", "|---|---|---|---|---|---|"]
    for m, v in d["models"].items():
        lines.append(f"| {m} | {v['size_mb']:.1f} MB | {v['cold_start_s'] * 1e3:.0f} ms | {v['init_s'] * 1e3:.0f} ms "
                     f"| {v['load_s'] * 1e3:.0f} ms | {v['exec_s'] * 1e3:.0f} ms |")
    return lines + [""]


def router_section(d: dict) -> list[str]:
    """One router's capacity with the action's work excluded (bench/bench_router.py)."""
    lines = ["## Router capacity (through the local OpenWhisk emulator)", "",
             f"Containers answer at once (a fake action), so this is the router and the emulator alone; "
             f"{d['actions']} actions of {d['slots_per_action']} slots, clients never queue. Paths: *emulator* = "
             "blocking invokes straight to the emulator (the platform alone), *router* = one router before it, "
             f"*front* = the front end before that router. {d['rounds']} interleaved rounds of "
             f"{d['seconds_per_run']:g} s per cell. CPU ms per request per process from /proc: the router's is "
             "what sizes it (one core ≈ 1000 / that many requests/s) and moves less with other load than "
             f"requests/s. Load average before the run: {' / '.join(f'{x:.1f}' for x in d['loadavg_before'])}.", ""]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for j, (p, paths) in enumerate(d["results"].items()):
        lines += [f"**{int(p):,} B per request**", "",
                  "| path | clients | req/s | p50 ms | p99 ms | CPU ms/req: router | emulator | front | client "
                  "| cores busy |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, (path, rows) in enumerate(paths.items()):
            for r in rows:
                c = r["cpu_ms_per_request"]
                lines.append(f"| {path} | {r['clients']} | {r['throughput_rps']:.0f} | {r['p50_ms']:.2f} "
                             f"| {r['p99_ms']:.2f} | {c['router']:.2f} | {c['emulator']:.2f} | {c['front']:.2f} "
                             f"| {c['client']:.2f} | {r['cores_busy']:.2f} |")
            ax.plot([r["clients"] for r in rows], [r["throughput_rps"] for r in rows], marker="o", color=f"C{k}",
                    linestyle="-" if j == 0 else "--", label=f"{path}, {int(p) // 1024} KiB")
        ra, cap = d["ratios"][p], d["capacity"][p]
        lines += ["", "router / emulator req/s by clients: " + ", ".join(
                      f"{c}: {x:.2f}" for c, x in zip(d["levels"], ra["router_over_emulator"]))
                  + "; front / router: " + ", ".join(
                      f"{c}: {x:.2f}" for c, x in zip(d["levels"], ra["front_over_router"])) + ".",
                  f"Router: **{cap['router_cpu_ms_per_request']:.2f} CPU ms per request** (median over levels), "
                  f"≈ {cap['router_rps_per_core']:.0f} requests/s per core; peak measured "
                  f"{cap['peak_router_rps']:.0f} req/s with the emulator on the same 2 cores. Front end: "
                  f"{cap['front_cpu_ms_per_request']:.2f} CPU ms per request (≈ {cap['front_rps_per_core']:.0f}/s "
                  f"per core). Added p50 at 1 client: router {cap['router_added_p50_ms_1_client']:.2f} ms, "
                  f"front end {cap['front_added_p50_ms_1_client']:.2f} ms.", ""]
    ax.set_xscale("log", base=2)
    ax.set_xticks(d["levels"], [str(c) for c in d["levels"]])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s")
    ax.set_title("Router capacity, action work excluded")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "perf-router.png", dpi=110)
    plt.close(fig)
    return lines + ["![router capacity](img/perf-router.png)", ""]


def flask_section(d: dict) -> list[str]:
    keep = d["keep_if"]
    lines = ["## The action's handler as a Flask app (issue 9 §4)", "",
             "A `create_app()` Flask app on the action's own one-process threaded server through WSGI, reading "
             "`wsgi.input` directly (bench/flask_action.py), against today's handler (app/server.py). Warm: both "
             "actions side by side, interleaved call by call; cold: process start → /init → first answer, "
             f"starts interleaved, median. Keep Flask only if the MobileNetV2 warm p50 grows by ≤ "
             f"{keep['warm_p50_delta_ms']} ms and the cold start by ≤ {(keep['cold_ratio'] - 1) * 100:.0f} %.", "",
             "| model | warm p50 today | warm p50 Flask | difference | cold today | cold Flask | ratio |",
             "|---|---|---|---|---|---|---|"]
    for m, v in d["models"].items():
        w, c = v["warm"], v["cold_ms"]
        lines.append(f"| {m} | {w['today']['p50_ms']:.2f} ms | {w['flask']['p50_ms']:.2f} ms "
                     f"| {v['warm_p50_delta_ms']:+.2f} ms | {c['today']:.0f} ms | {c['flask']:.0f} ms "
                     f"| {v['cold_ratio']:.3f} |")
    m = d["models"].get("mobilenetv2")
    if m:
        ok = m["warm_p50_delta_ms"] <= keep["warm_p50_delta_ms"] and m["cold_ratio"] <= keep["cold_ratio"]
        lines += ["", f"Outcome of this run: **{'Flask would qualify' if ok else 'keep today’s handler'}** "
                  f"(MobileNetV2 warm {m['warm_p50_delta_ms']:+.2f} ms, cold ×{m['cold_ratio']:.3f})."]
    return lines + [""]


def machine_section() -> list[str]:
    runs = {n: d for n in ("latency", "cold_start", "concurrency", "flask", "packing", "keyservice", "pq", "memory",
                           "platform", "router")
            if (d := load(n)) is not None}
    if not runs:
        return []
    m = next(iter(runs.values()))["machine"]
    lines = [f"**Machine:** {m.get('cpu_model', 'CPU model not recorded')}, {m['cpus']} logical CPUs, "
             f"Python {m['python']}. Load average (1 / 5 / 15 min) when each benchmark finished — other work "
             "on the machine shares these cores, so absolute times move with it; the ratios less so:", "",
             "| benchmark | finished (UTC) | load average |", "|---|---|---|"]
    for n, d in runs.items():
        la = d["machine"].get("loadavg_1_5_15")
        lines.append(f"| {n} | {d['when']} | {' / '.join(f'{x:.1f}' for x in la) if la else 'not recorded'} |")
    return lines + [""]


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    parts = ["# Performance", "",
             "Generated by `make bench` (bench/report.py) from `bench/results/*.json`. Every comparison is a "
             "ratio of variants measured in the same run. Models: the digits classifier (models/digits) and "
             "MobileNetV2, ResNet50, DenseNet121 built with random weights by tools/make_bench_models.py. The "
             "TEE is `sim`: no SGX enclave transitions or EPC paging are included.", ""] + machine_section()
    notes = REPO / "bench" / "NOTES.md"
    for name, fn in (("latency", latency_section), ("cold_start", cold_section),
                     ("concurrency", concurrency_section), ("flask", flask_section), ("packing", packing_section),
                     ("keyservice", keyservice_section), ("pq", pq_section), ("memory", memory_section),
                     ("platform", platform_section), ("router", router_section)):
        d = load(name)
        if d is None:
            parts += [f"## {name}", "", "not run", ""]
            continue
        parts += fn(d)
    if notes.exists():
        parts += [notes.read_text()]
    (DOCS / "performance.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'performance.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
