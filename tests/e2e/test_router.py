"""End to end through the serverless path: client SDK -> router -> OpenWhisk
emulator -> action containers (the real inference action) -> key service.
Actions are deployed with the `sesemi deploy` command line, unchanged, against
the emulator."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from bundle_tool.testing.openwhisk_local import client_for, start_emulator, start_router, write_router_config
from bundle_tool.testing.processes import free_port
from sesemi import envelope, tensors
from sesemi.client import ActionClient
from sesemi.errors import FormatError, NotFound, UnavailableError
from sesemi.openwhisk import load_credentials

from ..conftest import DIGITS, make_world, plaintext_outputs

MODELS = ("d-alpha", "d-beta")


def _sesemi(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("serverless")
    world = make_world(work, pin_ks=False)  # emulated containers are configured through /init only
    try:
        pack = world.deploy_pack("duo", {m: DIGITS for m in MODELS})
        for m in MODELS:
            world.home.save_request_key(world.user.principal_id, m, world.request_keys[m])
        emulator, wskprops = start_emulator(work, keep_alive_s=60)
        world.servers.append(emulator)
        env = {"WSK_CONFIG_FILE": str(wskprops)}
        p = _sesemi(env, "deploy", "sesemi-duo", "--replicas", "2", "--image", "sesemi-action", "--memory", "512",
                    "--concurrency", "4", "--env", f"SESEMI_PACK={pack}", "--env", f"SESEMI_KS_URL={world.ks_server.url}")
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("deployed sesemi-duo-") == 2 and "init env: SESEMI_KS_URL, SESEMI_PACK" in p.stdout
        # A pool whose actions cannot initialise (no key service there): bounded retries, then 503.
        dead_ks = f"http://127.0.0.1:{free_port()}"
        p = _sesemi(env, "deploy", "sesemi-broken", "--replicas", "2", "--image", "sesemi-action",
                    "--env", f"SESEMI_PACK={pack}", "--env", f"SESEMI_KS_URL={dead_ks}")
        assert p.returncode == 0, p.stderr
        config = write_router_config(work / "router.json", wskprops, {
            "duo": ((*MODELS, "d-ghost"), ["sesemi-duo-1", "sesemi-duo-2"]),  # d-ghost: not in the pack
            "broken": (["d-broken"], ["sesemi-broken-1", "sesemi-broken-2"]),
        }, {"share_limit": 4}, max_attempts=2, queue_timeout_s=20)
        router = start_router(work, config)
        world.servers.append(router)
        yield world, emulator, wskprops, router
    finally:
        world.stop()


def _stats(router) -> dict:
    return requests.get(router.url + "/stats", timeout=5).json()


def _containers(emulator, wskprops) -> list[dict]:
    return requests.get(emulator.url + "/emulator/containers", auth=load_credentials(wskprops).basic,
                        timeout=5).json()


def test_inference_through_router_and_emulator(stack, heldout):
    world, emulator, wskprops, router = stack
    x = heldout[0][:20]
    ref = plaintext_outputs(x)
    for model in MODELS:  # both models of the pack, over both paths the router accepts
        for path in ("/v1/infer", "/run"):
            res = ActionClient(router.url, path=path).infer(model, world.user.principal_id,
                                                             world.request_keys[model], {"image": x})
            assert set(res.outputs) == set(ref) and res.insecure_simulation is True
            for name in ref:
                np.testing.assert_array_equal(res.outputs[name], ref[name])
    counters = _stats(router)["counters"]
    assert counters["ok"] >= 4 and counters["failed"] == 0 and counters["cold_activations"] >= 1
    # Rare models share a warm action: one container served both models.
    assert len([c for c in _containers(emulator, wskprops) if c["action"].startswith("sesemi-duo")]) == 1


def test_cli_infer_through_router(stack, tmp_path):
    world, _, _, router = stack
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
    p = _sesemi({"SESEMI_HOME": str(world.home.root)}, "infer", "d-beta", "--action", router.url, "--path",
                "/v1/infer", "--as", "user", "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"))
    assert p.returncode == 0, p.stderr
    assert "INSECURE SIMULATION" in p.stderr and "wrote" in p.stdout
    assert np.load(tmp_path / "y.npz")[list(plaintext_outputs(np.zeros((2, 8, 8, 1), np.float32)))[0]].shape[0] == 2


def test_router_serves_its_counters_to_prometheus(stack, heldout):
    """`/metrics`: what `/stats` counts, scraped in Prometheus' text format."""
    from prometheus_client.parser import text_string_to_metric_families

    world, _, _, router = stack
    requests.post(router.url + "/v1/infer", json={"value": {}}, timeout=10)   # a refused request counts too
    families = {f.name: f for f in text_string_to_metric_families(requests.get(router.url + "/metrics",
                                                                             timeout=5).text)}
    assert families["sesemi_router_requests"].type == "counter"
    assert families["sesemi_router_requests"].samples[0].value == _stats(router)["counters"]["requests"]
    assert "sesemi_router_queued_requests" in families


def test_router_refusals_are_clear(stack):
    world, _, _, router = stack
    client = ActionClient(router.url, path="/v1/infer")
    with pytest.raises(NotFound, match="not served by this router"):
        client.infer("d-gamma", world.user.principal_id, world.request_keys["d-alpha"],
                     {"image": np.zeros((1, 8, 8, 1), np.float32)})
    # Tampered ciphertext: the action's refusal comes back as is, and is not retried.
    before = _stats(router)["counters"]["retries"]
    env = envelope.seal(world.request_keys["d-alpha"], "d-alpha", world.user.principal_id, envelope.new_request_id(),
                        envelope.REQUEST, b"\x00" * 64).to_json()
    env["ciphertext"] = env["ciphertext"][:-4] + ("AAAA" if env["ciphertext"][-4:] != "AAAA" else "BBBB")
    r = requests.post(router.url + "/v1/infer", json={"value": env}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["kind"] == "AccessDenied", r.text
    assert _stats(router)["counters"]["retries"] == before
    r = requests.post(router.url + "/v1/infer", data=b"not json", timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    # Over OpenWhisk's payload limit (the emulator's default, 1 MiB): 413, not retried.
    big = {**env, "ciphertext": base64.b64encode(os.urandom(1 << 20)).decode()}
    r = requests.post(router.url + "/v1/infer", json={"value": big}, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"] and r.json()["kind"] == "FormatError", r.text
    assert _stats(router)["counters"]["retries"] == before


def test_refusals_keep_their_status_and_the_warm_container(stack):
    """On OpenWhisk a refusal is an application error (200 + structured error):
    the router answers its status, retries nothing, and no container goes."""
    world, emulator, wskprops, router = stack
    x = tensors.encode({"image": np.zeros((1, 8, 8, 1), np.float32)})
    uid, rk = world.user.principal_id, world.request_keys["d-alpha"]
    env = envelope.seal(rk, "d-alpha", uid, envelope.new_request_id(), envelope.REQUEST, x).to_json()
    assert requests.post(router.url + "/v1/infer", json={"value": env}, timeout=30).status_code == 200
    before = _stats(router)["counters"]
    pids = {c["pid"] for c in _containers(emulator, wskprops) if c["action"].startswith("sesemi-duo")}

    def post(value: dict) -> requests.Response:
        return requests.post(router.url + "/v1/infer", json={"value": value}, timeout=30)

    r = post(env)                                                          # the same request again
    assert r.status_code == 409 and r.json()["error"]["kind"] == "ReplayError", r.text
    ghost = envelope.seal(rk, "d-ghost", uid, envelope.new_request_id(), envelope.REQUEST, x).to_json()
    r = post(ghost)                                                        # routed, but not in the pack
    assert r.status_code == 404 and r.json()["error"]["kind"] == "NotFound", r.text
    stranger = world.new_user("stranger")                                  # registered, never granted
    other = envelope.seal(envelope.new_request_key(), "d-alpha", stranger.principal_id,
                          envelope.new_request_id(), envelope.REQUEST, x).to_json()
    r = post(other)
    assert r.status_code == 403 and r.json()["error"]["kind"] == "AccessDenied", r.text
    # Tampered: malformed on the way (400), or altered ciphertext, which for a granted
    # user must look exactly like an ungranted one (403).
    bad = dict(env, nonce=env["nonce"][:-4])
    r = post(bad)
    assert r.status_code == 400 and r.json()["error"]["kind"] == "FormatError", r.text
    altered = dict(env, request_id=envelope.new_request_id())
    r = post(altered)
    assert r.status_code == 403 and r.json() == post(other).json(), r.text
    extra = dict(env, SESEMI_KS_URL="http://evil")                        # an init setting smuggled in
    r = post(extra)
    assert r.status_code == 400, r.text
    # A refusal of a request that authenticated comes back sealed; the SDK opens it.
    with pytest.raises(FormatError, match="dtype"):
        ActionClient(router.url, path="/v1/infer").infer("d-alpha", uid, rk, {"image": np.zeros((1, 8, 8, 1))})
    after = _stats(router)["counters"]
    assert after["retries"] == before["retries"] and after["action_errors"] >= before["action_errors"] + 4
    assert {c["pid"] for c in _containers(emulator, wskprops) if c["action"].startswith("sesemi-duo")} == pids


def test_init_failures_end_in_clear_503_after_bounded_retries(stack):
    world, emulator, wskprops, router = stack
    client = ActionClient(router.url, path="/v1/infer")
    t0 = time.monotonic()
    with pytest.raises(UnavailableError) as err:
        client.infer("d-broken", world.user.principal_id, world.request_keys["d-alpha"],
                     {"image": np.zeros((1, 8, 8, 1), np.float32)})
    msg = str(err.value)
    assert "2 attempt(s)" in msg and "action developer error" in msg and "cannot reach" in msg, msg
    assert time.monotonic() - t0 < 20
    assert not [c for c in _containers(emulator, wskprops) if c["action"].startswith("sesemi-broken")]


def test_action_killed_mid_request_is_retried_elsewhere(stack):
    world, emulator, wskprops, router = stack
    ow = client_for(wskprops)
    x = {"image": np.zeros((1, 8, 8, 1), np.float32)}
    # Warm a container in each action of the pool, directly through the platform.
    for action in ("sesemi-duo-1", "sesemi-duo-2"):
        rk = world.request_keys["d-alpha"]
        env = envelope.seal(rk, "d-alpha", world.user.principal_id, envelope.new_request_id(), envelope.REQUEST,
                            tensors.encode(x)).to_json()
        assert ow.invoke(action, env).success
    rows = {c["action"]: c for c in _containers(emulator, wskprops) if c["action"].startswith("sesemi-duo")}
    assert set(rows) == {"sesemi-duo-1", "sesemi-duo-2"}
    for c in rows.values():  # freeze both: the next request hangs in whichever the router picks
        os.kill(c["pid"], signal.SIGSTOP)
    out: list = []
    t = threading.Thread(target=lambda: out.append(
        ActionClient(router.url, path="/v1/infer").infer("d-alpha", world.user.principal_id,
                                                         world.request_keys["d-alpha"], x)))
    t.start()
    busy = None
    deadline = time.monotonic() + 10
    while busy is None and time.monotonic() < deadline:
        busy = next((c for c in _containers(emulator, wskprops) if c["pid"] in {r["pid"] for r in rows.values()}
                     and c["inflight"]), None)
        time.sleep(0.02)
    assert busy is not None
    retries = _stats(router)["counters"]["retries"]
    os.kill(busy["pid"], signal.SIGKILL)
    for c in rows.values():
        if c["pid"] != busy["pid"]:
            os.kill(c["pid"], signal.SIGCONT)
    t.join(30)
    assert out and out[0].outputs, "the request did not complete on the other action"
    assert _stats(router)["counters"]["retries"] == retries + 1
    assert busy["pid"] not in {c["pid"] for c in _containers(emulator, wskprops)}


def test_no_plaintext_in_router_emulator_or_container_files(stack):
    """Invariant 1 on this path: runs last in the module, stops the servers, scans every file they wrote."""
    world, _, _, router = stack
    rng = np.random.default_rng(11)
    x = rng.random((12, 8, 8, 1), dtype=np.float32)
    res = ActionClient(router.url, path="/v1/infer").infer("d-beta", world.user.principal_id,
                                                           world.request_keys["d-beta"], {"image": x})
    out = next(iter(res.outputs.values())).astype(np.float32)
    for s in reversed(world.servers):
        s.stop()
    files = [p for p in world.work.rglob("*") if p.is_file() and "home" not in p.relative_to(world.work).parts]
    names = {p.name for p in files}
    assert {"router.log", "platform.log", "router.json", "wskprops"} <= names
    assert any(p.parent.name == "containers" and p.suffix == ".log" for p in files)

    def windows(data: bytes, size: int) -> list[bytes]:
        step = max(1, (len(data) - size) // 16)
        return [data[o:o + size] for o in range(0, len(data) - size, step) if len(set(data[o:o + size])) > 8]

    needles = windows(x.tobytes(), 32) + windows(out.tobytes(), 16) + windows(DIGITS.read_bytes(), 48)
    needles.append(base64.b64encode(x.tobytes()[:96])[:64])
    for p in files:
        data = p.read_bytes()
        assert not any(n in data for n in needles), f"plaintext found in {p}"
