"""The pack planner and its cost model: the simulator's billed and reserved
GB-s checked by hand on a tiny trace, the planner's choices on a trace whose
answer is known, a plan judged on a held-out trace, and the `sesemi pack
plan` / `pack build --plan` / `deploy --plan` commands and the router reading
a plan as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from router.config import parse as parse_router_config
from router.sim.engine import PlatformParams, Setup, Simulation
from router.sim.report import MEASURED, fit_plan
from router.sim.workload import ModelCost, ModelProfile, Workload, WorkloadParams, generate
from sesemi import packplan
from sesemi.errors import FormatError

SMALL = ModelCost(exec_s=0.01, load_s=0.04, size_mb=10)    # footprint 37 MB: 256 MB alone
LARGE = ModelCost(exec_s=0.08, load_s=0.4, size_mb=100)    # footprint 370 MB: 512 MB alone


def _tiny() -> Workload:
    models = [ModelProfile("a", "small", 0.01, 1.0, SMALL), ModelProfile("b", "large", 0.01, 1.0, LARGE)]
    return Workload(WorkloadParams(n_models=2, duration_s=1000), models, np.array([0.0, 1.0, 5.0, 700.0]),
                    np.array([0, 0, 1, 0], dtype=np.int32))


PLATFORM = PlatformParams(cold_start_s=0.2, keep_alive_s=600, exec_cv=0.0)


def test_billed_and_reserved_gb_s_by_hand_one_action_per_model():
    r = Simulation(_tiny(), Setup("per-model", "per-model", cache_models=1), PLATFORM).run()
    # a (256 MB = 0.25 GB): t=0 cold: init 0.2 + load 0.04 + exec 0.01 (OpenWhisk's duration includes
    # initTime); t=1 warm: 0.01; t=700: idle since 1.01 > 600 s, so the container went: cold again.
    # b (128 + 370 MB -> 512 MB = 0.5 GB): t=5 cold: 0.2 + 0.4 + 0.08.
    billed = 0.25 * (0.25 + 0.01 + 0.25) + 0.5 * 0.68
    assert r.billed_gbs == pytest.approx(billed, abs=1e-9)
    assert r.container_starts == 3 and r.cold_requests == 3 and r.model_loads == 3
    # Reserved: container lifetimes to the end of the keep-alive (or of the 1000 s trace) x memory.
    reserved = 0.25 * (601.01 - 0) + 0.25 * (1000 - 700) + 0.5 * (605.68 - 5)
    assert r.reserved_gbs == pytest.approx(reserved, abs=1e-6)


def test_billed_gb_s_by_hand_for_a_plan():
    plan = {"format": packplan.PLAN_FORMAT, "router": {"policy": {"share_limit": 4}},
            "packs": [{"name": "p", "models": ["a", "b"], "memory_mb": 512, "budget_mb": 384, "pool_size": 1,
                       "policy": {}}]}
    r = Simulation(_tiny(), Setup("plan", "plan", plan=plan), PLATFORM).run()
    # One 512 MB action: a cold (0.2 + 0.04 + 0.01), a warm (0.01), b loads (0.4 + 0.08) and evicts a
    # (37 + 370 > 384 MB budget); at 700 the container (idle since 5.48 > 600 s) has gone: cold again.
    assert r.billed_gbs == pytest.approx(0.5 * (0.25 + 0.01 + 0.48 + 0.25), abs=1e-9)
    assert r.container_starts == 2 and r.model_loads == 3 and r.cold_requests == 2


def _times(rates: dict[str, float], span: float) -> dict[str, list[float]]:
    return {m: list(np.arange(0.5 / r, span, 1 / r)) for m, r in rates.items()}


def test_planner_packs_rare_models_with_a_busy_one_that_keeps_the_pack_warm():
    # The rare models are an hour apart each, so a pack of them alone would still start cold on every
    # request (gaps > the 600 s keep-alive). A busy model in the pack keeps its container warm; its
    # 100 MB and a rare model's 37 MB do not fit one 128 MB budget together, so it reloads after each
    # rare request, which costs less than the cold starts it saves. A second busy model would reload
    # after every switch between the two: it stays alone.
    specs = [packplan.ModelSpec(m, 27, 100, 0.04, 0.01) for m in ("hot", "hot2")] + \
        [packplan.ModelSpec(m, 10, 37, 0.04, 0.01) for m in ("r1", "r2", "r3")]
    span = 6 * 3600.0
    times = _times({"hot": 0.5, "hot2": 0.5, "r1": 1 / 3600, "r2": 1 / 1800, "r3": 1 / 2400}, span)
    plan = packplan.plan(specs, times, span, packplan.PlatformSpec(cold_start_s=0.25),
                         packplan.Targets(reserved_ratio=1.0))
    packs = {p["name"]: p for p in plan["packs"]}
    pack = packs["pack256"]
    assert {"r1", "r2", "r3"} <= set(pack["models"]) and len({"hot", "hot2"} & set(pack["models"])) == 1
    assert pack["memory_mb"] == 256 and pack["budget_mb"] == 128 and pack["pool_size"] >= 2
    alone = [p for p in plan["packs"] if p["name"].startswith("solo-")]
    assert len(alone) == 1 and alone[0]["memory_mb"] == 256 and alone[0]["bursts"] in ("scale", "queue")
    assert all(p["reason"] for p in plan["packs"])
    est = plan["estimate"]
    assert est["billed_ratio"] < 1.0 and est["cold_start_rate"] < est["per_model_cold_start_rate"] / 5
    assert not est["unmet"]
    json.dumps(plan)  # plain JSON
    cfg = parse_router_config(plan)  # the router reads the plan as written
    assert {p.name for p in cfg.packs} == {"pack256", alone[0]["name"]}
    assert cfg.pack_of()["r2"] == "pack256"
    cmds = packplan.commands(plan, "plan.json", "img")
    assert any("--memory 256" in c and "SESEMI_MEMORY_BUDGET_MB=128" in c and "--replicas" in c for c in cmds)
    # One image per pack (a hardware TEE measures the pack inside it): /init names no pack file.
    per_pack = packplan.commands(plan, "plan.json", "registry/sesemi-{pack}")
    assert any("--image registry/sesemi-pack256 " in c for c in per_pack)
    assert not any("SESEMI_PACK=" in c for c in per_pack) and any("SESEMI_PACK=" in c for c in cmds)


def test_router_config_per_pack_policy_and_refusals():
    doc = {"packs": [{"name": "a", "models": ["m1"], "actions": ["x-1"], "policy": {"claimed_limit": 50}},
                     {"name": "b", "models": ["m2"], "actions": ["y-1"]}], "policy": {"share_limit": 3}}
    cfg = parse_router_config(doc)
    assert cfg.packs[0].policy.claimed_limit == 50 and cfg.packs[0].policy.share_limit == 3
    assert cfg.packs[1].policy is None
    with pytest.raises(FormatError, match="unknown setting"):
        parse_router_config({**doc, "packs": [{**doc["packs"][0], "policy": {"nope": 1}}]})
    with pytest.raises(FormatError, match="not a pack plan"):
        parse_router_config({"format": "other", "packs": []})


def test_plan_fitted_on_one_day_judged_on_another():
    """Held out: the plan never saw the arrivals it is scored on."""
    cost = {k: replace(c) for k, c in MEASURED["models"].items()}
    wp = WorkloadParams(n_models=60, duration_s=6 * 3600, seed=7)
    fit, held = generate(replace(wp, arrival_seed=0), cost), generate(replace(wp, arrival_seed=1), cost)
    assert [m.model_id for m in fit.models] == [m.model_id for m in held.models] and fit.n != held.n
    platform = PlatformParams(cold_start_s=MEASURED["cold_start_s"])
    plan = fit_plan(fit, platform)
    per_model = Simulation(held, Setup("per-model", "per-model", cache_models=1), platform).run()
    planned = Simulation(held, Setup("plan", "plan", plan=plan), platform).run()
    assert planned.failed == 0 and planned.served == held.n
    assert planned.cold_rate < per_model.cold_rate / 2
    assert planned.billed_gbs <= 1.02 * per_model.billed_gbs


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _inputs(tmp_path):
    (tmp_path / "models.json").write_text(json.dumps({"models": [
        {"model_id": m, "size_mb": 10, "footprint_mb": 37, "load_s": 0.04, "exec_s": 0.01, "sealed": f"{m}.sealed"}
        for m in ("hot", "r1", "r2")] + [
        {"model_id": "big", "size_mb": 100, "load_s": 0.4, "exec_s": 0.08}]}))
    rows = ["timestamp,model"] + [f"{t:.3f},hot" for t in np.arange(0, 7200, 2.0)] + \
        [f"{t:.3f},r1" for t in np.arange(10, 7200, 1500.0)] + [f"{t:.3f},r2" for t in np.arange(20, 7200, 1900.0)] + \
        [f"{t:.3f},big" for t in np.arange(30, 7200, 2000.0)]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")


def test_cli_pack_plan_writes_plan_router_config_and_commands(tmp_path):
    _inputs(tmp_path)
    p = _cli("pack", "plan", "--models", str(tmp_path / "models.json"), "--trace", str(tmp_path / "trace.csv"),
             "--out-dir", str(tmp_path / "out"), "--image", "sesemi-action")
    assert p.returncode == 0, p.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["format"] == packplan.PLAN_FORMAT and "sesemi deploy" in p.stdout and "--memory" in p.stdout
    assert plan["models"]["r1"]["sealed"] == str(tmp_path / "r1.sealed")  # relative to the manifest
    router = json.loads((tmp_path / "out" / "router.json").read_text())
    assert parse_router_config(router).pack_of() == parse_router_config(plan).pack_of()
    script = (tmp_path / "out" / "deploy.sh").read_text()
    assert "sesemi pack build --plan" in script and "sesemi router serve --config" in script
    # deploy --plan: the pack's names, memory limit and budget as planned.
    f = tmp_path / "props"
    f.write_text("APIHOST=http://127.0.0.1:3233\n")
    pack = next(x for x in plan["packs"] if len(x["models"]) > 1)
    p = _cli("deploy", "--plan", str(tmp_path / "out" / "plan.json"), "--pack", pack["name"], "--image", "img",
             "--dry-run", env={"WSK_CONFIG_FILE": str(f)})
    assert p.returncode == 0, p.stderr
    assert f'"memory": {pack["memory_mb"]}' in p.stdout and "SESEMI_MEMORY_BUDGET_MB" in p.stdout
    assert p.stdout.count("PUT ") == pack["pool_size"]
    p = _cli("deploy", "--plan", str(tmp_path / "out" / "plan.json"), "--pack", pack["name"], "--image", "img",
             "--memory", "512", "--dry-run", env={"WSK_CONFIG_FILE": str(f)})
    assert p.returncode == 2 and "come from the plan" in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.parametrize("change, message", [
    (("--trace", "{dir}/bad.csv"), "not in the models manifest"),
    ((), "one of them"),
    (("--trace", "{dir}/missing.csv"), "cannot read trace"),
    (("--trace", "{dir}/trace.csv", "--cold-start-rate", "-1"), "--cold-start-rate"),
    (("--rates", "{dir}/huge.json"), "give a trace sample"),  # bounded: not 86 M arrivals in memory
])
def test_cli_pack_plan_bad_input_is_one_line(tmp_path, change, message):
    _inputs(tmp_path)
    (tmp_path / "bad.csv").write_text("1.0,hot\n2.0,\x1b[31mghost\n")
    (tmp_path / "huge.json").write_text(json.dumps({"hot": 1000}))
    p = _cli("pack", "plan", "--models", str(tmp_path / "models.json"), "--out-dir", str(tmp_path / "o"),
             *(c.format(dir=tmp_path) for c in change))
    assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert "\x1b" not in p.stderr and "Traceback" not in p.stderr


def test_cli_pack_plan_from_per_model_rates(tmp_path):
    _inputs(tmp_path)
    (tmp_path / "rates.json").write_text(json.dumps({"hot": 0.5, "r1": 1 / 3600, "r2": 1 / 1800, "big": 1 / 900}))
    p = _cli("pack", "plan", "--models", str(tmp_path / "models.json"), "--rates", str(tmp_path / "rates.json"),
             "--out-dir", str(tmp_path / "out"), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["estimate"]["requests"] == 43200 + 24 + 48 + 96 and any("--memory" in c for c in out["commands"])
    (tmp_path / "rates.json").write_text(json.dumps({"ghost": 1.0}))
    p = _cli("pack", "plan", "--models", str(tmp_path / "models.json"), "--rates", str(tmp_path / "rates.json"),
             "--out-dir", str(tmp_path / "out"))
    assert p.returncode == 2 and "not in the manifest" in p.stderr
