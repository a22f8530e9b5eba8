"""`sesemi demo`: the whole flow on local defaults, every server a real process.

Owner seals and publishes the digits model, grants a user; the user enrolls
and sends the held-out digits through the encrypted path; the demo prints the
encrypted-path accuracy next to a plaintext interpreter's on the same inputs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sesemi.client import ActionClient

from .testing.world import LocalWorld
from .litert import interpreter
from .progress import Bar, Steps
from .testing.reference import plaintext_outputs

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "digits" / "digits.tflite"
HELDOUT = REPO / "models" / "digits" / "digits_heldout.npz"
MODEL_ID = "digits"


def plaintext_predictions(model_path: Path, x: np.ndarray, batch: int) -> np.ndarray:
    """The owner's own plaintext run, on the owner's machine: the reference."""
    return np.concatenate([next(iter(plaintext_outputs(model_path, x[i:i + batch]).values())).argmax(axis=1)
                           for i in range(0, len(x), batch)])

def bare_invoke_latency(model_path: Path, sample: np.ndarray, n: int) -> list[float]:
    interp = interpreter(model_path.read_bytes(), num_threads=1)
    idx = interp.get_input_details()[0]["index"]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        interp.set_tensor(idx, sample)
        interp.invoke()
        interp.get_tensor(interp.get_output_details()[0]["index"])
        times.append(time.perf_counter() - t0)
    return times


def run_demo(workdir: str | None = None, batch: int = 30, platform: bool = False) -> dict:
    """`platform`: serve through the local OpenWhisk emulator and the router
    (client -> router -> emulator -> action containers) instead of one action."""
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="sesemi-demo-")
        work = Path(tmp)
    else:
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
    world = None
    _step = Steps(5)
    try:
        print("WARNING: INSECURE SIMULATION (tee=sim): no SGX here; evidence is simulated and labelled so.")
        _step("starting the key service (--insecure-sim-attestation); attesting and pinning it")
        world = LocalWorld.start(work)
        pin = world.ks.pin
        print(f"    pinned key service: tee={pin.tee} mrenclave={pin.mrenclave[:16]}...")
        print(f"    owner {world.owner.principal_id}\n    user  {world.user.principal_id}")
        _step("owner seals the model, builds a pack, publishes the key for the pack's measurement, "
              "grants the user; the user enrolls a request key")
        # Emulated containers get their settings from /init, which may not carry the
        # (trusted) key-service pin: that path runs unpinned, which tee=sim allows.
        pinned = not platform
        pack_path = world.deploy_pack("models", {MODEL_ID: MODEL}, pinned=pinned)
        print(f"    action mrenclave (sim) {world.mrenclave(pack_path, pinned=pinned)}"
              + ("" if pinned else " (key service not pinned)"))
        user, rk = world.user, world.request_keys[MODEL_ID]

        if platform:
            from .testing.openwhisk_local import start_platform

            _step("starting the OpenWhisk emulator, deploying a pool of 2 actions through its REST API, "
                  "starting the router (containers start on demand and attest at /init)")
            local = start_platform(work, world.ks_server.url, {"models": (pack_path, [MODEL_ID])})
            world.servers += local.servers
            url, path = local.url, local.path
        else:
            _step("starting the inference action (attests to the key service at init)")
            url, path = world.action(pack_path).url, "/run"

        data = np.load(HELDOUT)
        x, y = data["x"].astype(np.float32), data["y"]
        _step(f"user sends {len(x)} held-out digits through the encrypted path (batches of {batch})")
        client = ActionClient(url, path=path)
        preds = []
        sim_label = False
        with Bar("    digits sent", len(x), unit="") as bar:
            for i in range(0, len(x), batch):
                res = client.infer(MODEL_ID, user.principal_id, rk, {"image": x[i:i + batch]})
                sim_label = res.insecure_simulation
                preds.append(next(iter(res.outputs.values())).argmax(axis=1))
                bar(len(x[i:i + batch]))
        enc_pred = np.concatenate(preds)
        plain_pred = plaintext_predictions(MODEL, x, batch)
        enc_acc = float((enc_pred == y).mean())
        plain_acc = float((plain_pred == y).mean())

        _step("warm latency, batch 1: encrypted path vs bare invoke (same model, same run)")
        sample = x[:1]
        for _ in range(20):
            client.infer(MODEL_ID, user.principal_id, rk, {"image": sample})
        enc_t = []
        for _ in range(200):
            t0 = time.perf_counter()
            client.infer(MODEL_ID, user.principal_id, rk, {"image": sample})
            enc_t.append(time.perf_counter() - t0)
        bare_t = bare_invoke_latency(MODEL, sample, 200)
        enc_p50, bare_p50 = statistics.median(enc_t) * 1e3, statistics.median(bare_t) * 1e3

        print()
        print(f"accuracy, encrypted path (sim enclave): {enc_acc:.4f}  ({int((enc_pred == y).sum())}/{len(y)})")
        print(f"accuracy, plaintext interpreter:        {plain_acc:.4f}  ({int((plain_pred == y).sum())}/{len(y)})")
        print(f"predictions identical: {bool((enc_pred == plain_pred).all())}")
        print(f"warm p50 latency: encrypted path {enc_p50:.2f} ms, bare invoke {bare_p50:.3f} ms")
        if sim_label:
            print("responses were labelled insecure_simulation=true (tee=sim)")
        if enc_acc != plain_acc:
            raise SystemExit("demo FAILED: encrypted-path accuracy differs from plaintext accuracy")
        return {"encrypted_accuracy": enc_acc, "plaintext_accuracy": plain_acc,
                "enc_p50_ms": enc_p50, "bare_p50_ms": bare_p50}
    finally:
        if world is not None:
            world.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
