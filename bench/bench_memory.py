"""Memory: resident set of the action per model, against the plaintext server
holding the same model. If the action kept a second plaintext copy of a model
beyond the interpreter's own, its growth on load would exceed the plaintext
server's by about the model's size."""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import pybase64
import urllib3


from bench.common import (bench_world, MODELS, available, model_input, parse_args, progress, rss_mb,
                          write_result)
from bundle_tool.testing.processes import free_port, start_process
from sesemi.client import ActionClient


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["digits", "mobilenetv2", "resnet50", "densenet121"])
    args = parse_args(ap)
    if args.smoke:
        args.models = ["digits"]
    names = available(args.models)
    out = {}
    with bench_world() as (work, world):
        for name in names:
            model = MODELS[name]
            x = model_input(name)
            pack = world.deploy_pack(f"mem-{name}", {name: model})
            action = world.action(pack, extra=["--pool-size", "2"], name=f"action-mem-{name}")
            before = rss_mb(action.proc.pid)
            ActionClient(action.url).infer(name, world.user.principal_id, world.request_keys[name], {"image": x})
            time.sleep(0.2)
            after = rss_mb(action.proc.pid)
            action.stop()

            port = free_port()
            plain = start_process(f"plain-mem-{name}", [sys.executable, "-m", "bench.plain_server",
                                                        str(model), str(port), "1", "2"], port, work / "logs",
                                  "/health")
            body = orjson.dumps({"value": {"data": pybase64.b64encode_as_string(x.tobytes()),
                                           "shape": list(x.shape), "dtype": "float32"}})
            urllib3.PoolManager().request("POST", plain.url + "/run", body=body)
            time.sleep(0.2)
            p = rss_mb(plain.proc.pid)
            plain.stop()
            size = model.stat().st_size / (1 << 20)
            out[name] = {"model_mb": size, "action_rss_before_load_mb": before["rss_mb"],
                         "action_rss_mb": after["rss_mb"], "action_peak_rss_mb": after["peak_rss_mb"],
                         "action_growth_on_load_mb": after["rss_mb"] - before["rss_mb"],
                         "plain_rss_mb": p["rss_mb"], "plain_peak_rss_mb": p["peak_rss_mb"]}
            progress(f"{name}: model {size:.1f} MB; action RSS {after['rss_mb']:.0f} MB (peak "
                     f"{after['peak_rss_mb']:.0f}, +{out[name]['action_growth_on_load_mb']:.0f} on load); "
                     f"plain RSS {p['rss_mb']:.0f} MB (peak {p['peak_rss_mb']:.0f})")
    write_result("memory", {"models": out})


if __name__ == "__main__":
    main()
