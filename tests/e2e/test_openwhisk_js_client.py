"""The official OpenWhisk JavaScript client (npm `openwhisk`, the library
`wsk`-like tools and many users call) against `sesemi platform serve`: every
call answers in OpenWhisk's documented shapes, errors as `{"error", "code"}`.

Needs node and the client in the cache `.ci/run` fills (`.cache/node`, or
$SESEMI_NODE_MODULES); skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_tool.testing.openwhisk_local import start_emulator
from sesemi.openwhisk import load_credentials

REPO = Path(__file__).resolve().parents[2]
MODULES = Path(os.environ.get("SESEMI_NODE_MODULES") or REPO / ".cache" / "node" / "node_modules")
SCRIPT = Path(__file__).with_name("js") / "ow_client_calls.js"
FAKE = Path(__file__).with_name("fake_action.py")


def _skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (.ci/run installs nodejs and npm)"
    if not (MODULES / "openwhisk" / "package.json").is_file():
        return f"the npm openwhisk client is not in {MODULES} (.ci/run installs it: npm install --prefix .cache/node openwhisk@3.21)"
    return None


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("owjs")
    srv, wskprops = start_emulator(work, extra=["--image", f"fake={sys.executable} {FAKE}"])
    try:
        creds = load_credentials(wskprops)
        p = subprocess.run(["node", str(SCRIPT), creds.apihost, creds.auth], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "NODE_PATH": str(MODULES)})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    finally:
        srv.stop()


def _is_error(out: dict, status: int) -> None:
    assert out["ok"] is False and out["status"] == status, out
    body = out["body"]
    assert set(body) == {"error", "code"} and isinstance(body["error"], str) and len(body["code"]) == 32, body


def test_errors_have_openwhisk_shape(calls):
    assert calls["create"]["ok"], calls["create"]
    _is_error(calls["createAgain"], 409)
    assert calls["createAgain"]["body"]["error"] == "resource already exists"
    _is_error(calls["getMissing"], 404)
    assert calls["getMissing"]["body"]["error"] == "The requested resource does not exist."
    _is_error(calls["activationMissing"], 404)
    _is_error(calls["noAuth"], 401)
    assert calls["noAuth"]["body"]["error"] == "The supplied authentication is invalid."
    _is_error(calls["badKind"], 400)


def test_invocations_and_records(calls):
    inv = calls["invoke"]
    assert inv["ok"], inv
    rec = inv["body"]
    assert rec["response"]["success"] is True and rec["response"]["status"] == "success"
    assert rec["response"]["result"]["echo"] == 7 and rec["response"]["size"] > 0
    ann = {a["key"]: a["value"] for a in rec["annotations"]}
    assert ann["timeout"] is False and "waitTime" in ann and "initTime" in ann and ann["kind"] == "blackbox"
    assert calls["invokeResult"]["ok"] and calls["invokeResult"]["body"]["echo"] == 8
    # An application error: the client rejects with 502 and the record; only `error` kept.
    app = calls["appError"]
    assert app["ok"] is False and app["status"] == 502
    assert app["body"]["response"]["result"] == {"error": {"kind": "FormatError", "status": 400, "message": "bad"}}
    assert calls["list"]["ok"] and {r["activationId"] for r in calls["list"]["body"]} >= {rec["activationId"]}
    assert calls["get"]["ok"] and calls["get"]["body"]["activationId"] == rec["activationId"]
    assert calls["logs"]["ok"] and calls["logs"]["body"] == {"logs": []}
    assert calls["result"]["ok"] and calls["result"]["body"]["result"]["echo"] == 7
    assert calls["update"]["ok"] and calls["update"]["body"]["version"] == "0.0.2"
    assert calls["delete"]["ok"]
