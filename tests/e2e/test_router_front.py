"""Several routers behind one front end, all real processes on
loopback: the OpenWhisk emulator, two routers (one per group of packs), the
front end, and fake action containers (tests/e2e/fake_action.py, which answer
at once). Two more routers exist only in the front end's table: one whose
port is closed and one that accepts and never answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from hypothesis import example

from bundle_tool.testing.openwhisk_local import (deploy_pool, start_emulator, start_front, start_router, write_front_config,
                                        write_router_config)
from bundle_tool.testing.processes import free_port

from ..reliability.figures import twin
from ..reliability.silent import accepts_but_never_answers
from ..reliability.test_properties_http import _check, _request

FAKE = Path(__file__).with_name("fake_action.py")
MAX_BODY = 64 << 10


class _NotARouter(BaseHTTPRequestHandler):
    """Something else listening where a router should be: answers HTML."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("front")
    servers = []
    other = ThreadingHTTPServer(("127.0.0.1", 0), _NotARouter)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    # The refused start runs meanwhile (a process start is most of its cost); its test reads the outcome.
    twice = work / "twice.json"
    write_router_config(twice, work / "none", {"a": (["m-a1"], ["x-1"])})
    bad = write_front_config(work / "bad.json", {"a": ("http://127.0.0.1:1", twice),
                                                 "b2": ("http://127.0.0.1:2", twice)})
    refused = subprocess.Popen([sys.executable, "-m", "bundle_tool", "router", "front", "--config", str(bad), "--port",
                                str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with accepts_but_never_answers() as silent_url:
        try:
            wskprops = work / "platform" / "wskprops"    # where start_emulator has the emulator write it
            pool_a, pool_b = ["fa-1", "fa-2"], ["fb-1"]  # what deploy_pool names them
            cfg_a = write_router_config(work / "a.json", wskprops, {"a": (["m-a1", "m-a2"], pool_a)})
            running_b = write_router_config(work / "b-running.json", wskprops, {"b": (["m-b1"], pool_b)})
            # The front end reads another copy of b's file, which says more than b runs: drift.
            cfg_b = write_router_config(work / "b.json", wskprops, {"b": (["m-b1", "m-b2"], pool_b)})
            cfg_c = write_router_config(work / "c.json", wskprops, {"c": (["m-c1"], ["fc-1"])})
            cfg_d = write_router_config(work / "d.json", wskprops, {"d": (["m-d1"], ["fd-1"])})
            cfg_e = write_router_config(work / "e.json", wskprops, {"e": (["m-e1"], ["fe-1"])})
            port_a, port_b = free_port(), free_port()
            front_cfg = write_front_config(work / "front.json", {
                "a": (f"http://127.0.0.1:{port_a}", cfg_a), "b": (f"http://127.0.0.1:{port_b}", cfg_b),
                "c": (f"http://127.0.0.1:{free_port()}", cfg_c), "d": (silent_url, cfg_d),
                "e": (f"http://127.0.0.1:{other.server_address[1]}", cfg_e)},
                connect_timeout_s=1, max_body_bytes=MAX_BODY)
            doc = json.loads(front_cfg.read_text())
            doc["routers"][3]["read_timeout_s"] = 1
            front_cfg.write_text(json.dumps(doc))
            with ThreadPoolExecutor(2) as ex:
                # The front end needs no router up to start; two worker processes, as it is stateless.
                front = ex.submit(start_front, work, front_cfg, extra=["--workers", "2"])
                emulator, written = start_emulator(work, keep_alive_s=60, max_containers=4,
                                                   extra=["--image", f"fake={sys.executable} {FAKE}"])
                servers.append(emulator)
                servers.append(front.result())
            assert written == wskprops
            assert deploy_pool(wskprops, "fa", 2, {}, image="fake", concurrency=4, memory_mb=128) == pool_a
            assert deploy_pool(wskprops, "fb", 1, {}, image="fake", concurrency=4, memory_mb=128) == pool_b
            with ThreadPoolExecutor(2) as ex:
                fa = ex.submit(start_router, work, cfg_a, "router-a", port_a)
                fb = ex.submit(start_router, work, running_b, "router-b", port_b)
                servers += [fa.result(), fb.result()]
            yield servers[1].url, refused, servers[2].url
        finally:
            other.shutdown()
            if refused.poll() is None:
                refused.kill()
            refused.communicate()
            with ThreadPoolExecutor(len(servers) or 1) as ex:  # each takes ~1 s (gunicorn's shutdown)
                list(ex.map(lambda s: s.stop(), servers))


def _post(url: str, model: str | None, path: str = "/v1/infer", **value) -> requests.Response:
    body = {"value": {"model_id": model, "ciphertext": "AAAA", **value}} if model else value
    return requests.post(url + path, json=body, timeout=30)


def test_front_routes_each_model_to_its_router_and_forwards_unchanged(fleet):
    url, *_ = fleet
    payload = {"nested": [1, 2.5, "x" * 1000], "k": None}
    for model, router, pool in (("m-a1", "a", "fa-"), ("m-a2", "a", "fa-"), ("m-b1", "b", "fb-")):
        for path in ("/v1/infer", "/run"):
            r = _post(url, model, path, echo=payload)
            assert r.status_code == 200, r.text
            assert r.headers["X-Sesemi-Router"] == router and r.headers["X-Sesemi-Action"].startswith(pool)
            assert r.json()["echo"] == payload              # the envelope reached the action as sent
    stats = requests.get(url + "/stats", timeout=5).json()  # one worker's counters
    assert set(stats["forwarded_per_router"]) == {"a", "b", "c", "d", "e"}
    text = requests.get(url + "/metrics", timeout=5).text   # Prometheus' text format, scraped
    assert "# TYPE sesemi_front_forwarded_by_router_total counter" in text
    assert 'sesemi_front_forwarded_by_router_total{router="a"}' in text and "sesemi_front_requests_total" in text


def test_unknown_model_and_bad_input_get_json_4xx_with_a_reason(fleet):
    url, *_ = fleet
    r = _post(url, "m-zzz")
    assert r.status_code == 404 and r.json()["kind"] == "NotFound"
    assert "not served by any router" in r.json()["error"]
    r = _post(url, "bad/id")
    assert r.status_code == 400 and "model id" in r.json()["error"]
    r = requests.post(url + "/v1/infer", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = requests.post(url + "/v1/infer", json={"value": "x"}, timeout=10)
    assert r.status_code == 400 and "envelope" in r.json()["error"]
    r = _post(url, "m-a1", echo="x" * MAX_BODY)
    assert r.status_code == 413 and r.json()["kind"] == "FormatError"
    for method, path, code in (("GET", "/v1/infer", 405), ("GET", "/nope", 404)):
        r = requests.request(method, url + path, timeout=10)
        assert r.status_code == code and r.json()["error"], (method, path, r.text)


def test_a_router_down_or_silent_is_named_within_its_bound(fleet):
    url, *_ = fleet
    r = _post(url, "m-c1")
    assert r.status_code == 503 and r.headers["Retry-After"] and r.headers["X-Sesemi-Router"] == "c"
    assert r.json()["kind"] == "UnavailableError" and "router c" in r.json()["error"], r.text
    t0 = time.monotonic()
    r = _post(url, "m-d1")
    took = time.monotonic() - t0
    assert r.status_code == 503 and r.json()["kind"] == "TimeoutExpired", r.text
    assert "read timeout (1 s) expired" in r.json()["error"] and took < 10
    r = _post(url, "m-e1")
    assert r.status_code == 502 and "without a JSON body" in r.json()["error"]
    assert _post(url, "m-a1").status_code == 200                # the others are unaffected


def test_unparsable_http_gets_json_from_the_http_server_itself(fleet):
    """gunicorn answers a bad request line before any app code: JSON too, at the front end and a router."""
    url, _, router_url = fleet
    for u in (url, router_url):
        host, port = u.rsplit(":", 1)
        with socket.create_connection((host.split("//")[1], int(port)), timeout=10) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"Content-Type: application/json" in head, data
        assert json.loads(body)["kind"] == "FormatError" and json.loads(body)["error"], body


def test_routers_probe_names_down_and_drifted_routers(fleet):
    url, *_ = fleet
    r = requests.get(url + "/routers", timeout=15)
    assert r.status_code == 503 and r.json()["ok"] is False
    states = {row["name"]: row["state"] for row in r.json()["routers"]}
    assert states == {"a": "ok", "b": "drift", "c": "down", "d": "down", "e": "down"}
    # What drift does to a request: the front end routes m-b2 to b, which refuses it clearly.
    r = _post(url, "m-b2")
    assert r.status_code == 404 and "not served by this router" in r.json()["error"]
    assert r.headers["X-Sesemi-Router"] == "b"


def test_front_refuses_two_routers_claiming_one_model(fleet):
    _, refused, _ = fleet
    _, err = refused.communicate(timeout=60)
    assert refused.returncode != 0 and err.count("\n") == 1, err
    assert "model m-a1 is claimed by routers a and b2" in err


@twin(_request, fast=40, soak=1500)
@example(("GARBAGE", "", "", None, [], b"", 0))
@example(("GET", "/" + "a" * 70000, "HTTP/1.1", None, [], b"", 0))
@example(("POST", "/v1/infer", "HTTP/1.1", "abc", [], b"", 0))
def _raw_gunicorn(url, parts):
    _check(url, parts)


def test_front_end_and_router_raw_http(fleet):
    """Raw-HTTP property (tests/reliability) against the front end and a router (both
    gunicorn): JSON 4xx, never HTML or a 5xx; both still serve afterwards."""
    url, _, router_url = fleet
    _raw_gunicorn[0](url)
    _raw_gunicorn[0](router_url)
    assert _post(url, "m-a1").status_code == 200


@pytest.mark.soak
def test_front_end_and_router_raw_http_soak(fleet):
    url, _, router_url = fleet
    _raw_gunicorn[1](url)
    _raw_gunicorn[1](router_url)
    assert _post(url, "m-a1").status_code == 200
