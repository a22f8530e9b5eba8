"""The plain action image in a real container, started as OpenWhisk starts a
blackbox action: the container listens on 8080, gets POST /init with
value.env once, then POST /run per activation. The key service runs on the
host (`python -m bundle_tool keyservice serve --insecure-sim-attestation`),
the owner and user drive it through the SDK (tests/conftest.make_world).

Slow-ish and needs podman + runc: runs only under `make image-test`
(SESEMI_IMAGE_TEST=1); `make test` skips it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
import requests

from sesemi import envelope, tensors
from sesemi.client import ActionClient
from sesemi.encoding import json_dumps

from ..conftest import make_world, mrenclave_for, plaintext_outputs

if os.environ.get("SESEMI_IMAGE_TEST") != "1":
    pytest.skip("container test: run `make image-test`", allow_module_level=True)

RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
PACK_IN_CONTAINER = "/srv/pack/main.pack"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def image():
    if not (shutil.which("podman") and shutil.which("runc")):
        pytest.fail("podman and runc are needed: `make image-test` installs them (apt-get install podman runc)")
    from .podman_build import build_plain_image

    t0 = time.monotonic()
    tag = build_plain_image(log=lambda msg: print(msg))
    print(f"image build: {time.monotonic() - t0:.1f}s")
    return tag


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("imgworld"), pin_ks=False)  # the container is configured by /init
    w.pack.chmod(0o644)  # read by the container's unprivileged user
    yield w
    w.stop()


@pytest.fixture(scope="module")
def container(image, world):
    """`docker run` as an invoker does it: the image's own entry point, nothing but the port.
    Host networking keeps all traffic on loopback; 8080 unless something here already holds it."""
    port = 8080 if _port_free(8080) else None
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    name = f"sesemi-imgtest-{uuid.uuid4().hex[:8]}"
    args = ["podman", "run", "-d", "--name", name, *RUN_FLAGS, "--network", "host",
            "-v", f"{world.pack}:{PACK_IN_CONTAINER}:ro"]
    if port != 8080:
        args += ["-e", f"SESEMI_PORT={port}"]
    subprocess.run(args + [image], check=True, capture_output=True, text=True, timeout=60)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/stats", timeout=1)
                break
            except requests.RequestException:
                state = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", name],
                                       capture_output=True, text=True).stdout.strip()
                if state != "true" or time.monotonic() > deadline:
                    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
                    pytest.fail(f"container did not start listening:\n{logs.stdout}{logs.stderr}")
                time.sleep(0.2)
        yield name, url
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True, timeout=60)


def _post(url: str, path: str, doc: object) -> requests.Response:
    return requests.post(url + path, data=json_dumps(doc), headers={"Content-Type": "application/json"},
                         timeout=60)


def test_openwhisk_init_and_run_contract(world, container):
    _, url = container
    r = _post(url, "/run", {"value": {}})
    assert r.status_code == 503 and "not initialised" in r.json()["error"]
    env = {"SESEMI_PACK": PACK_IN_CONTAINER, "SESEMI_KS_URL": world.ks_server.url}
    r = _post(url, "/init", {"value": {"name": "digits", "main": "main", "code": "", "binary": False, "env": env}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["tee"] == "sim" and body["insecure_simulation"] is True
    # the code in the image is this checkout's: the simulated measurement matches the host's prediction
    assert body["mrenclave"] == mrenclave_for(world.pack)
    r = _post(url, "/init", {"value": {"env": env}})
    assert r.status_code == 403 and "more than once" in r.json()["error"]
    r = requests.post(url + "/run", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_encrypted_inference_matches_plaintext(world, container, heldout):
    _, url = container
    x, y = heldout
    res = ActionClient(url).infer("digits", world.user.principal_id, world.request_key, {"image": x[:50]})
    ref = plaintext_outputs(x[:50])
    for k in ref:
        np.testing.assert_array_equal(res.outputs[k], ref[k])
    assert res.insecure_simulation is True and res.tee == "sim"
    assert (next(iter(res.outputs.values())).argmax(1) == y[:50]).mean() > 0.9


def test_tampered_and_replayed_requests_refused(world, container):
    _, url = container
    x = np.zeros((1, 8, 8, 1), np.float32)
    env = envelope.seal(world.request_key, "digits", world.user.principal_id, envelope.new_request_id(),
                        envelope.REQUEST, tensors.encode({"image": x}))
    ct = bytearray(env.ciphertext)
    ct[3] ^= 1
    bad = envelope.Envelope(**{**env.__dict__, "ciphertext": bytes(ct)}).to_json()
    r = _post(url, "/run", {"value": bad})
    assert r.status_code == 400 and "does not authenticate" in r.json()["error"]
    assert _post(url, "/run", {"value": env.to_json()}).status_code == 200
    r = _post(url, "/run", {"value": env.to_json()})
    assert r.status_code == 409 and "replayed" in r.json()["error"]


def test_container_wrote_nothing_and_said_so(container):
    """Nothing lands on the platform's disk (the container's writable layer
    stays empty), and the log says the run is a simulation."""
    name, _ = container
    diff = subprocess.run(["podman", "diff", name], capture_output=True, text=True, check=True).stdout.split("\n")
    injected = ("/etc", "/run", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv",
                "/srv", "/srv/pack", "/srv/pack/main.pack")
    changed = [ln for ln in diff if ln.strip() and ln.split(maxsplit=1)[-1] not in injected]
    assert not changed, f"the action wrote to the container's file system: {changed}"
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
    text = logs.stdout + logs.stderr
    assert "INSECURE SIMULATION" in text
    assert "Traceback" not in text
