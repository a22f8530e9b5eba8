"""`python -m router.sim`: compare one action per model, the SeSeMI
prototype's FnPacker and our policy on one generated Azure-like trace; write
the results into docs/packing.md and docs/img/packing-sim.png."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import load_costs, plot, plot_front, render, results_json, run, scenarios, write


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m router.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--costs", type=Path, help="bench/results/platform.json (default: the numbers measured here)")
    ap.add_argument("--doc", type=Path, default=Path("docs/packing.md"))
    ap.add_argument("--image", type=Path, default=Path("docs/img/packing-sim.png"))
    ap.add_argument("--json", type=Path, help="also write all numbers here")
    ap.add_argument("--front-image", type=Path, default=Path("docs/img/packing-pareto.png"))
    ap.add_argument("--only-main", action="store_true", help="skip the sensitivity scenarios")
    ap.add_argument("--no-front", action="store_true", help="skip the planner's other targets (the trade-off plot)")
    args = ap.parse_args(argv)
    try:
        cold, costs = load_costs(args.costs)
    except (OSError, ValueError, KeyError) as exc:
        print(f"router.sim: error: cannot read costs {args.costs}: {type(exc).__name__}", file=sys.stderr)
        return 2
    scs = scenarios(cold)[:1] if args.only_main else scenarios(cold)
    workload = None
    for i, sc in enumerate(scs):
        print(f"[{sc.name}] fitting the plan on one day, judging every policy on another ...", flush=True)
        w = run(sc, costs, front=(i == 0 and not args.no_front))
        workload = workload or w
        for r in sc.results:
            print(f"[{sc.name}] {r.label}: failed {r.failed}, cold {100 * r.cold_rate:.3f}%, "
                  f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, billed {r.billed_gbs:,.0f} GB-s, "
                  f"reserved {r.reserved_gbs / 3600:,.0f} GB-h", flush=True)
    rel = None
    if workload is not None and plot(scs[0], workload, args.image):
        try:
            rel = str(args.image.resolve().relative_to(args.doc.resolve().parent))
        except ValueError:
            rel = str(args.image)
    else:
        print("matplotlib not installed (pip install '.[bench]'): no plot", file=sys.stderr)
    front_rel = None
    if scs[0].variants and plot_front(scs[0], args.front_image):
        try:
            front_rel = str(args.front_image.resolve().relative_to(args.doc.resolve().parent))
        except ValueError:
            front_rel = str(args.front_image)
    source = f"costs from {args.costs}" if args.costs else "costs measured here (router/sim/report.py)"
    write(args.doc, render(scs, costs, cold, rel, source, front_rel))
    if args.json:
        args.json.write_text(json.dumps(results_json(scs), indent=2))
    print(f"wrote {args.doc}" + (f" and {args.image}" if rel else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
