"""(g) Platform costs through the local OpenWhisk emulator, per model: the
inputs of the packing simulator (router/sim, docs/packing.md).

- cold start: waitTime + initTime of a cold activation (process start of the
  action image, then /init: pack, measurement, attestation);
- model load: the first activation's duration for a model in a new container,
  minus initTime and minus the warm duration (key fetch, decryption,
  interpreter build);
- execution: the median warm activation duration (batch 1).

Writes bench/results/platform.json; `python -m router.sim --costs` reads it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


from bench.common import MODELS, model_input, progress, parse_args, write_result
from bundle_tool.testing.world import LocalWorld
from bundle_tool.testing.openwhisk_local import client_for, deploy_pool, start_emulator
from sesemi import envelope, tensors


def _params(world: LocalWorld, model_id: str) -> dict:
    rk = world.request_keys[model_id]
    env = envelope.seal(rk, model_id, world.user.principal_id, envelope.new_request_id(), envelope.REQUEST,
                        tensors.encode({"input": model_input(model_id)}))
    return env.to_json()


def measure(world: LocalWorld, model_id: str, reps: int, warm_n: int) -> dict:
    pack = world.deploy_pack(f"plat-{model_id}", {model_id: MODELS[model_id]}, pinned=False)  # set by /init
    emulator, wskprops = start_emulator(world.work, keep_alive_s=600, name=f"platform-{model_id}")
    world.servers.append(emulator)
    client = client_for(wskprops)
    env = {"SESEMI_PACK": str(pack), "SESEMI_KS_URL": world.ks_server.url, "SESEMI_POOL_SIZE": "1"}
    cold, init, load, warm = [], [], [], []
    for _ in range(reps):
        # Redeploying bumps the version: the next activation needs a new container.
        (action,) = deploy_pool(wskprops, f"cost-{model_id}", 1, env, concurrency=1)
        first = client.invoke(action, _params(world, model_id))
        if not first.success or not first.cold:
            raise RuntimeError(f"{model_id}: cold activation failed: {first.error}")
        runs = [client.invoke(action, _params(world, model_id)) for _ in range(warm_n)]
        if not all(r.success and not r.cold for r in runs):
            raise RuntimeError(f"{model_id}: warm activation failed or was cold")
        w = statistics.median(r.duration_ms for r in runs)
        warm.append(w)
        cold.append((first.wait_ms or 0) + (first.init_ms or 0))
        init.append(first.init_ms or 0)
        load.append(max(0.0, first.duration_ms - (first.init_ms or 0) - w))
    emulator.stop()
    return {"cold_start_s": statistics.median(cold) / 1e3, "init_s": statistics.median(init) / 1e3,
            "load_s": statistics.median(load) / 1e3, "exec_s": statistics.median(warm) / 1e3,
            "size_mb": MODELS[model_id].stat().st_size / (1 << 20), "reps": reps, "warm_n": warm_n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--models", default="digits,mobilenetv2,densenet121,resnet50")
    args = parse_args(ap)
    if args.smoke:
        args.models, args.reps, args.warm = "digits", 1, 2
    names = [n for n in args.models.split(",") if MODELS[n].exists()]
    skipped = sorted(set(args.models.split(",")) - set(names))
    if skipped:
        progress(f"skipping models not built here: {skipped} (make bench-models)")
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        world = LocalWorld.start(Path(tmp))
        try:
            for name in names:
                progress(f"{name}: {args.reps} cold starts, {args.warm} warm activations each")
                out[name] = measure(world, name, args.reps, args.warm)
                progress(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in out[name].items()
                                                    if k.endswith("_s")))
        finally:
            world.stop()
    cold = statistics.median(m["cold_start_s"] for m in out.values())
    write_result("platform", {"cold_start_s": cold, "models": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
