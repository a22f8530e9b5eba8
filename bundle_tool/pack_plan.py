"""`sesemi pack plan`: from the models' costs and their traffic, a pack plan
(sesemi/packplan.py) with its router config and the commands that build and
deploy it; `pack build --plan` and `deploy --plan` read a plan as written."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sesemi import packplan
from sesemi.encoding import JSONDecodeError, json_loads
from sesemi.errors import FormatError

from .output import Out
from .progress import on_terminal


def read_json(path: str, what: str) -> Any:
    try:
        return json_loads(Path(path).read_text())
    except OSError as exc:
        raise FormatError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (JSONDecodeError, UnicodeDecodeError):
        raise FormatError(f"{what} {path}: invalid JSON") from None


def load_plan(path: str) -> dict[str, Any]:
    return packplan.check_plan(read_json(path, "pack plan"))


def _positive(v: float, what: str, lo: float = 0.0) -> float:
    if not v > lo:
        raise FormatError(f"{what} must be > {lo:g}")
    return v


def cmd_pack_plan(args: argparse.Namespace) -> Out:
    manifest = Path(args.models)
    models = packplan.parse_models(read_json(args.models, "models manifest"), manifest.parent,
                                   _positive(args.footprint_factor, "--footprint-factor"))
    if bool(args.trace) == bool(args.rates):
        raise FormatError("give the traffic as --trace CSV or --rates JSON (one of them)")
    if args.trace:
        times, span = packplan.read_trace(Path(args.trace), [m.model_id for m in models])
    else:
        rates = read_json(args.rates, "rates")
        if not isinstance(rates, dict):
            raise FormatError("rates: expected an object {model: requests per second}")
        unknown = sorted(set(rates) - {m.model_id for m in models})
        if unknown:
            raise FormatError(f"rates: model(s) not in the manifest: {', '.join(unknown[:5])}")
        span = 86400.0
        times = packplan.times_from_rates(rates, span)
    if not 1 <= args.concurrency <= 500 or args.max_memory < 128 or args.memory_step < 1:
        raise FormatError("--concurrency must be in [1, 500], --max-memory >= 128, --memory-step >= 1")
    platform = packplan.PlatformSpec(keep_alive_s=_positive(args.keep_alive, "--keep-alive"),
                                     cold_start_s=_positive(args.cold_start, "--cold-start", -1e-12),
                                     concurrency=args.concurrency, base_mb=args.base_mb,
                                     memory_step_mb=args.memory_step, max_memory_mb=args.max_memory)
    targets = packplan.Targets(cold_start_rate=_positive(args.cold_start_rate, "--cold-start-rate", -1e-12),
                               p99_ratio=_positive(args.p99_ratio, "--p99-ratio"),
                               reserved_ratio=_positive(args.reserved_ratio, "--reserved-ratio"),
                               billed_ratio=_positive(args.billed_ratio, "--billed-ratio"))
    say = (lambda msg: print(f"pack plan: {msg}", file=sys.stderr, flush=True)) if on_terminal(sys.stderr) \
        else None
    doc = packplan.plan(models, times, span, platform, targets, say)
    if args.wskprops:
        doc["router"]["openwhisk"] = {"wskprops": args.wskprops}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan_path, router_path, cmds_path = out / "plan.json", out / "router.json", out / "deploy.sh"
    plan_path.write_text(json.dumps(doc, indent=2) + "\n")
    router_path.write_text(json.dumps(packplan.router_config(doc), indent=2) + "\n")
    cmds = packplan.commands(doc, str(plan_path), args.image)
    cmds_path.write_text("#!/bin/sh\n# Written by `sesemi pack plan`: build and deploy each pack of the plan.\n"
                         "set -e\n" + "\n".join(cmds) + "\n")
    est = doc["estimate"]
    packs = [p for p in doc["packs"] if "bursts" not in p]
    alone = [p for p in doc["packs"] if "bursts" in p]
    lines = [f"plan for {len(models)} models, {est['requests']:,} requests: "
             + "; ".join(f"{p['name']}: {len(p['models'])} models, {p['memory_mb']} MB, {p['pool_size']} actions"
                         for p in packs) + ("; " if packs else "") + f"{len(alone)} model(s) alone",
             f"estimate on this trace: billed GB-s {est['billed_ratio']:.3f}x one action per model, cold-start rate "
             f"{100 * est['cold_start_rate']:.3f}% (one action per model: {100 * est['per_model_cold_start_rate']:.3f}%)"
             f", p99 {est['p99_s'] * 1e3:.0f} ms ({est['per_model_p99_s'] * 1e3:.0f} ms), reserved "
             f"{est['reserved_ratio']:.2f}x"]
    if est["unmet"]:
        lines.append("targets not met: " + "; ".join(est["unmet"]))
    lines += [f"wrote {plan_path}, {router_path} and {cmds_path}:", *("  " + c for c in cmds)]
    return Out({"plan": str(plan_path), "router_config": str(router_path), "commands": cmds, "estimate": est},
               "\n".join(lines))


def add_plan_command(pack: Any, add: Any) -> None:
    a = add(pack, "plan", cmd_pack_plan, "choose packs, memory limits and pools that minimise billed GB-s "
                                         "under cold-start, p99 and reserved-memory targets")
    a.add_argument("--models", required=True, metavar="MODELS.json",
                   help='{"models": [{"model_id", "size_mb" or "sealed", "footprint_mb", "load_s", "exec_s"}]} '
                        "(bench/bench_platform.py measures the times)")
    a.add_argument("--trace", metavar="CSV", help="requests as timestamp,model rows (seconds)")
    a.add_argument("--rates", metavar="RATES.json", help="instead of a trace: {model: requests per second}")
    a.add_argument("--out-dir", required=True, metavar="DIR", help="where to write plan.json, router.json, deploy.sh")
    a.add_argument("--image", default="IMAGE", help="the action image in the deploy commands; {pack} becomes each "
                                                    "pack's name (one image per pack, as a hardware TEE needs)")
    a.add_argument("--wskprops", metavar="PATH", help="the router's OpenWhisk properties file (in the router config)")
    t, pf = packplan.Targets(), packplan.PlatformSpec()
    for flag, kind, default, meta, what in (
            ("--cold-start-rate", float, t.cold_start_rate, "R", "at most this share of requests cold (0.0005 = 0.05%%)"),
            ("--p99-ratio", float, t.p99_ratio, "X", "p99 at most X times one action per model's"),
            ("--reserved-ratio", float, t.reserved_ratio, "X", "container memory-time at most X times one action per "
                                                                 "model's"),
            ("--billed-ratio", float, t.billed_ratio, "X", "billed GB-s at most X times one action per model's "
                                                             "(kept first when not every target can be met)"),
            ("--keep-alive", float, pf.keep_alive_s, "S", "the platform's idle container lifetime"),
            ("--cold-start", float, pf.cold_start_s, "S", "container start + /init (bench/bench_platform.py)"),
            ("--concurrency", int, pf.concurrency, "N", "the actions' limits.concurrency"),
            ("--max-memory", int, pf.max_memory_mb, "MB", "the platform's largest limits.memory"),
            ("--memory-step", int, pf.memory_step_mb, "MB", "memory limits in steps of this")):
        a.add_argument(flag, type=kind, default=default, metavar=meta, help=what)
    a.add_argument("--base-mb", type=float, default=pf.base_mb, metavar="MB", help="the action without models")
    a.add_argument("--footprint-factor", type=float, default=3.7, metavar="X",
                   help="footprint = file size x X where the manifest gives none (measured: 3.7)")
