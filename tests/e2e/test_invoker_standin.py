"""The real action driven by a scripted stand-in for OpenWhisk's invoker: the
exact /init and /run bodies apache/openwhisk sends (ContainerProxy.scala
initializeAndRun, WhiskAction.containerInitializer, Container.scala run), and
each answer checked against how the invoker classifies it
(ActivationResult.scala): a refusal must be an application error (200 with
`error`), never a 503 (runtime shutting down) and never a developer error
that would cost the warm container. Also every answer of the action's HTTP
server is JSON, bad /init settings are refused by name before anything
starts, and a refused /init leaves the action able to take a corrected one."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import numpy as np
import pytest
import requests

from sesemi import envelope, tensors
from sesemi.encoding import json_loads


def _ow_env(aid: str) -> dict[str, str]:
    """"__OW_" + initializeAndRun's fields, every value a string."""
    return {"__OW_NAMESPACE": "guest", "__OW_ACTION_NAME": "/guest/sesemi-1", "__OW_ACTION_VERSION": "0.0.1",
            "__OW_ACTIVATION_ID": aid, "__OW_TRANSACTION_ID": uuid.uuid4().hex,
            "__OW_DEADLINE": str(int(time.time() * 1000) + 60_000)}


def _init_body(env: dict[str, str]) -> dict:
    # containerInitializer of a blackbox action: no `code`.
    return {"value": {"name": "sesemi-1", "binary": False, "main": "main", "env": {**env, **_ow_env(uuid.uuid4().hex)}}}


def _run_body(value: dict) -> dict:
    aid = uuid.uuid4().hex
    return {"value": value, "namespace": "guest", "action_name": "/guest/sesemi-1", "action_version": "0.0.1",
            "activation_id": aid, "transaction_id": uuid.uuid4().hex,
            "deadline": str(int(time.time() * 1000) + 60_000)}


def _classify(r: requests.Response) -> str:
    """processRunResponseContent, reduced to the outcome."""
    if r.status_code == 503:
        return "container health failure"
    body = json_loads(r.content)
    if r.status_code != 200:
        return "developer error"
    return "application error" if isinstance(body, dict) and "error" in body else "success"


def _raw(url: str, data: bytes) -> bytes:
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(
                    b"content-length:")), 0)
                if len(body) >= length:
                    return out


def _json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head, raw[:300]
    return int(head.split(b" ")[1]), json_loads(body)


@pytest.fixture(scope="module")
def bare(world):
    """An action started as an image is: no settings, waiting for /init."""
    return world.action(init=False, extra=["--threads", "8"])


def test_invoker_bodies_and_classification(world, bare):
    url = bare.url
    settings = {"SESEMI_PACK": str(world.pack), "SESEMI_KS_URL": world.ks_server.url}
    # /run before /init: what the reference action proxy answers (502), not 503.
    r = requests.post(url + "/run", json=_run_body({}), timeout=10)
    assert r.status_code == 502 and _classify(r) == "developer error"
    # Refused /init settings: a developer error naming the setting, before anything
    # starts; each leaves the action able to take a corrected /init.
    for bad, name in (({"SESEMI_KS_URLL": "x"}, "SESEMI_KS_URLL"),
                      ({"SESEMI_PACK": str(world.work)}, "SESEMI_PACK"),            # a directory
                      ({"SESEMI_INTERP_THREADS": "-1"}, "SESEMI_INTERP_THREADS"),
                      ({"SESEMI_KS_URL": "http://[::1"}, "SESEMI_KS_URL"),
                      ({"SESEMI_KS_URL": "ftp://host/"}, "SESEMI_KS_URL")):
        r = requests.post(url + "/init", json=_init_body({**settings, **bad}), timeout=30)
        assert r.status_code == 400, (bad, r.text)
        assert name in r.json()["error"]["message"] and r.json()["error"]["kind"] == "FormatError"
    r = requests.post(url + "/init", json=_init_body(settings), timeout=30)
    assert r.status_code == 200, r.text
    x = tensors.encode({"image": np.zeros((1, 8, 8, 1), np.float32)})
    uid, rk = world.user.principal_id, world.request_key
    good = envelope.seal(rk, "digits", uid, envelope.new_request_id(), envelope.REQUEST, x).to_json()
    r = requests.post(url + "/run", json=_run_body(good), timeout=30)
    assert _classify(r) == "success" and "response" in r.json()
    refusals = {
        "replay": (good, 409),
        "unknown model": (envelope.seal(rk, "ghost", uid, envelope.new_request_id(), envelope.REQUEST, x).to_json(),
                          404),
        "tampered": (dict(good, request_id=envelope.new_request_id()), 403),  # as if not granted
        "malformed": (dict(good, nonce=good["nonce"][:-4]), 400),
        "extra field": (dict(good, SESEMI_KS_URL="http://evil"), 400),
    }
    for what, (value, status) in refusals.items():
        r = requests.post(url + "/run", json=_run_body(value), timeout=30)
        assert _classify(r) == "application error", (what, r.status_code, r.text)
        err = r.json()["error"]
        assert set(err) >= {"kind", "status", "message"} and err["status"] == status, (what, err)


def test_action_accepts_limits_concurrency_connections(world, bare):
    """The invoker opens up to limits.concurrency connections; the action serves
    --threads (8) at once and queues the rest instead of answering 503."""
    conns = []
    try:
        host, port = bare.url.rsplit("/", 1)[1].split(":")
        for _ in range(8):  # idle keep-alive connections holding every thread
            conns.append(socket.create_connection((host, int(port)), timeout=10))
        out: list[int] = []
        t = threading.Thread(target=lambda: out.append(requests.get(bare.url + "/stats", timeout=30).status_code))
        t.start()
        time.sleep(0.3)
        conns.pop().close()  # one slot frees: the waiting connection is served
        t.join(30)
        assert out == [200]
    finally:
        for c in conns:
            c.close()


def test_every_answer_of_the_http_server_is_json(bare):
    url = bare.url
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        status, body = _json_answer(_raw(url, f"{method} /run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                                         .encode()))
        assert status in (405, 501) and body["error"]["message"], (method, body)
    status, body = _json_answer(_raw(url, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"))
    assert status == 414
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(120))
    status, body = _json_answer(_raw(url, b"GET /stats HTTP/1.1\r\n" + headers + b"\r\n"))
    assert status == 431
    status, body = _json_answer(_raw(url, b"\x16\x03\x01 garbage\r\n\r\n"))
    assert status == 400
    # latin-1: the byte 0xB2 is what http.server decodes to "²" (isdigit() true, int() refuses it)
    status, body = _json_answer(_raw(url, "POST /run HTTP/1.1\r\nContent-Length: ²\r\n\r\n".encode("latin-1")))
    assert status == 411
    status, body = _json_answer(_raw(url, b"GET /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
    assert status == 404
    # The server still serves after all that.
    assert requests.get(url + "/stats", timeout=10).status_code == 200
    assert "Traceback" not in bare.log_text()
