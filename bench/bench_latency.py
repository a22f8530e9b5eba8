"""(a) Warm latency per model, three ways, measured side by side in one run:

  (i)   bare LiteRT invoke in-process (the limit);
  (ii)  a plaintext Flask + LiteRT server (bench/plain_server.py);
  (iii) the SeSeMI encrypted path, client -> action -> client.

Also where the time goes on the secure path: codec and crypto steps timed
in-process on the same input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson
import pybase64
import requests
import urllib3


from bench.common import (bench_world, INTERP_THREADS, MODELS, available, model_input, parse_args,
                          interleaved, progress, summary_ms, timed, write_result)
from bundle_tool.testing.processes import free_port, start_process
from sesemi import envelope, tensors
from sesemi.client import ActionClient
from sesemi.encoding import json_dumps, json_loads


def bare(model: Path, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model.read_bytes(), num_threads=INTERP_THREADS)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    out_idx = it.get_output_details()[0]["index"]

    def call():
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out_idx)
    return call


def plain_client(url: str, x: np.ndarray):
    """The same HTTP client library and codecs as the SDK's ActionClient."""
    pool = urllib3.PoolManager(maxsize=4, retries=False)

    def call():
        body = orjson.dumps({"value": {"data": pybase64.b64encode_as_string(x.tobytes()), "shape": list(x.shape),
                                       "dtype": x.dtype.name}})
        r = pool.request("POST", url + "/run", body=body, headers={"Content-Type": "application/json"}, timeout=60)
        v = orjson.loads(r.data)
        return np.frombuffer(pybase64.b64decode(v["data"]), dtype=v["dtype"]).reshape(v["shape"])
    return call


def request_body(name: str, uid: str, rk: bytes, x: np.ndarray) -> bytes:
    env = envelope.seal(rk, name, uid, envelope.new_request_id(), envelope.REQUEST, tensors.encode({"image": x}))
    return json_dumps({"value": env.to_json()})


def echo_client(url: str, body: bytes):
    """(iv) the transport floor: a real request's bytes to the action's HTTP layer doing nothing."""
    pool = urllib3.PoolManager(maxsize=4, retries=False)

    def call():
        return pool.request("POST", url + "/run", body=body, headers={"Content-Type": "application/json"},
                            timeout=60).data
    return call


def breakdown(x: np.ndarray, n: int = 50) -> dict[str, float]:
    """Per-step cost of the secure path's codecs and crypto on this input (ms, p50)."""
    key = envelope.new_request_key()
    raw = tensors.encode({"image": x})
    env = envelope.seal(key, "m", "u", "r", envelope.REQUEST, raw)
    body = json_dumps({"value": env.to_json()})
    steps = {
        "tensor encode": lambda: tensors.encode({"image": x}),
        "AES-GCM encrypt": lambda: envelope.seal(key, "m", "u", "r", envelope.REQUEST, raw),
        "base64+JSON encode": lambda: json_dumps({"value": env.to_json()}),
        "JSON+base64 decode": lambda: envelope.Envelope.from_json(json_loads(body)["value"]),
        "AES-GCM decrypt": lambda: envelope.open_(key, env, envelope.REQUEST),
        "tensor decode": lambda: tensors.decode(raw),
    }
    return {k: summary_ms(timed(f, n))["p50_ms"] for k, f in steps.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["digits", "null224", "mobilenetv2", "resnet50", "densenet121"])
    ap.add_argument("-n", type=int, default=0, help="requests per variant (default: by model size)")
    args = parse_args(ap)
    if args.smoke:
        args.models, args.n = ["digits"], 10
    names = available(args.models)
    results = {}
    with bench_world() as (work, world):
        for name in names:
            model = MODELS[name]
            x = model_input(name)
            n = args.n or {"digits": 300, "null224": 200, "mobilenetv2": 150}.get(name, 40)
            progress(f"{name}: starting the plaintext server and the SeSeMI action")
            pack = world.deploy_pack(name, {name: model})
            action = world.action(pack, extra=["--pool-size", "1"],
                                  env={"SESEMI_INTERP_THREADS": str(INTERP_THREADS)}, name=f"action-{name}")
            port = free_port()
            plain = start_process(f"plain-{name}", [sys.executable, "-m", "bench.plain_server",
                                                    str(model), str(port), str(INTERP_THREADS), "1"],
                                  port, work / "logs", "/health")
            world.servers.append(plain)
            client = ActionClient(action.url)
            rk, uid = world.request_keys[name], world.user.principal_id
            body = request_body(name, uid, rk, x)
            response_bytes = len(urllib3.request("POST", action.url + "/run", body=body).data)
            port = free_port()
            echo = start_process(f"echo-{name}", [sys.executable, "-m", "bench.echo_server",
                                                  str(port), str(response_bytes)], port, work / "logs", "/stats")
            world.servers.append(echo)
            variants = {
                "bare": bare(model, x),
                "plain": plain_client(plain.url, x),
                "sesemi": lambda: client.infer(name, uid, rk, {"image": x}),
                "echo": echo_client(echo.url, body),
            }
            times = interleaved(variants, n, on_progress=lambda i: progress(f"{name}: {i}/{n}"))
            s = {k: summary_ms(v) for k, v in times.items()}
            # The action's own set_tensor + invoke + get_tensor, over the same requests
            # (its recent window), beside the bare invoke of the same span in this process.
            st = requests.get(action.url + "/stats", timeout=10).json()
            s["action_invoke"] = st["recent_invoke"][name]
            s["action_run"] = {"p50_ms": st["recent_run_p50_ms"]}  # /run handling: body in to body out
            results[name] = {
                "input_bytes": int(x.nbytes),
                "model_bytes": model.stat().st_size,
                **s,
                "ratio_sesemi_plain_p50": s["sesemi"]["p50_ms"] / s["plain"]["p50_ms"],
                "ratio_sesemi_bare_p50": s["sesemi"]["p50_ms"] / s["bare"]["p50_ms"],
                "ratio_plain_bare_p50": s["plain"]["p50_ms"] / s["bare"]["p50_ms"],
                "ratio_action_invoke_bare_p50": s["action_invoke"]["p50_ms"] / s["bare"]["p50_ms"],
                # The best any server on this transport could do: bare invoke plus the HTTP floor.
                "ratio_floor_bare_p50": (s["bare"]["p50_ms"] + s["echo"]["p50_ms"]) / s["bare"]["p50_ms"],
                "request_bytes": len(body), "response_bytes": response_bytes,
                "breakdown_ms": breakdown(x, 3 if args.smoke else 50),
            }
            progress(f"{name}: bare {s['bare']['p50_ms']:.2f} ms, action's invoke {s['action_invoke']['p50_ms']:.2f} "
                     f"ms, plain {s['plain']['p50_ms']:.2f} ms, sesemi {s['sesemi']['p50_ms']:.2f} ms, "
                     f"HTTP echo {s['echo']['p50_ms']:.2f} ms (p50)")
            plain.stop()
            echo.stop()
            action.stop()
    write_result("latency", {"models": results})


if __name__ == "__main__":
    main()
