"""The shared OpenWhisk REST client: credentials as `wsk` reads them, the
action body `sesemi deploy` sends, activation records, and `--dry-run`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sesemi.errors import FormatError
from sesemi.openwhisk import (APPLICATION_ERROR, DEVELOPER_ERROR, ActionSpec, Activation, OpenWhiskClient,
                              load_credentials, normalize_apihost, parse_wskprops)

SECRET = "s3cr3t-Pa55word"


def test_wskprops_like_wsk(tmp_path, monkeypatch):
    f = tmp_path / "props"
    f.write_text(f"# comment\nAPIHOST=ow.example:443\nAUTH=user1:{SECRET}\n\nNAMESPACE=team\n")
    assert parse_wskprops(f.read_text())["AUTH"] == f"user1:{SECRET}"
    monkeypatch.setenv("WSK_CONFIG_FILE", str(f))
    creds = load_credentials()
    assert creds.apihost == "https://ow.example:443" and creds.namespace == "team"
    assert creds.basic == ("user1", SECRET) and SECRET not in repr(creds)
    # Explicit values win over the file, as `wsk --apihost` does.
    assert load_credentials(apihost="http://127.0.0.1:3233", namespace="_").apihost == "http://127.0.0.1:3233"
    monkeypatch.setenv("WSK_CONFIG_FILE", str(tmp_path / "missing"))
    with pytest.raises(FormatError, match="no OpenWhisk API host"):
        load_credentials()
    f.write_text("APIHOST=h\nAUTH=nocolon\n")
    with pytest.raises(FormatError, match="user:password"):
        load_credentials(f)
    assert normalize_apihost("http://h:1/") == "http://h:1"


def test_action_body_is_a_blackbox_with_limits_and_init_env():
    spec = ActionSpec("sesemi-a-1", "ghcr.io/x/sesemi-action:1", 512, 30_000, 4,
                      {"SESEMI_KS_URL": "http://ks"}, {"p": 1}, {"a": "b"}).validate()
    body = spec.body("_")
    assert body["exec"] == {"kind": "blackbox", "image": "ghcr.io/x/sesemi-action:1"}
    assert body["limits"] == {"memory": 512, "timeout": 30_000, "concurrency": 4}
    assert {"key": "SESEMI_KS_URL", "value": "http://ks", "init": True} in body["parameters"]
    assert {"key": "p", "value": 1} in body["parameters"]
    # final: an invocation may not override init settings (the controller answers 400);
    # provide-api-key=false: no platform credential in the container.
    ann = {a["key"]: a["value"] for a in body["annotations"]}
    assert ann == {"exec": "blackbox", "final": True, "provide-api-key": False, "a": "b"}
    for bad in (dict(memory_mb=64), dict(timeout_ms=10), dict(concurrency=0), dict(name="-x"), dict(image="a b")):
        with pytest.raises(FormatError):
            ActionSpec(**{"name": "ok", "image": "img", **bad}).validate()


def test_planned_request_names_url_and_redacts_auth(tmp_path):
    f = tmp_path / "props"
    f.write_text(f"APIHOST=http://127.0.0.1:3233\nAUTH=u:{SECRET}\n")
    client = OpenWhiskClient(load_credentials(f))
    req = client.plan_put_action(ActionSpec("a1", "sesemi-action"))
    assert req.method == "PUT" and req.url == "http://127.0.0.1:3233/api/v1/namespaces/_/actions/a1?overwrite=true"
    text = req.describe()
    assert SECRET not in text and "<redacted>" in text and '"kind": "blackbox"' in text


def test_activation_records():
    rec = {"activationId": "a1", "name": "n", "start": 10, "end": 25, "duration": 15,
           "response": {"status": "success", "statusCode": 0, "success": True, "result": {"response": {}}},
           "annotations": [{"key": "waitTime", "value": 3}, {"key": "initTime", "value": 7}]}
    act = Activation.from_record(rec)
    assert act.success and act.cold and act.init_ms == 7 and act.wait_ms == 3 and act.duration_ms == 15
    warm = Activation.from_record({**rec, "annotations": [{"key": "waitTime", "value": 1}]})
    assert not warm.cold
    err = Activation.from_record({**rec, "response": {"status": APPLICATION_ERROR, "result": {"error": "no"}}})
    assert not err.success and err.error == "no" and err.status_code == 1
    odd = Activation.from_record({**rec, "response": {"status": "success", "result": [1]}})
    assert odd.status == DEVELOPER_ERROR
    with pytest.raises(FormatError):
        Activation.from_record({"activationId": "x"})


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_deploy_dry_run_prints_requests_without_auth(tmp_path):
    f = tmp_path / "props"
    f.write_text(f"APIHOST=https://ow.example\nAUTH=u:{SECRET}\nNAMESPACE=guest\n")
    p = _cli("deploy", "pool", "--replicas", "2", "--image", "sesemi-action", "--memory", "1024", "--concurrency",
             "4", "--env", "SESEMI_KS_URL=http://ks:8443", "--dry-run", env={"WSK_CONFIG_FILE": str(f)})
    assert p.returncode == 0, p.stderr
    assert "PUT https://ow.example/api/v1/namespaces/guest/actions/pool-1?overwrite=true" in p.stdout
    assert "actions/pool-2?overwrite=true" in p.stdout and '"memory": 1024' in p.stdout
    assert SECRET not in p.stdout + p.stderr and "Basic <redacted>" in p.stdout


def test_deploy_errors_are_one_line(tmp_path):
    p = _cli("deploy", "a", "--image", "img", env={"WSK_CONFIG_FILE": str(tmp_path / "none")})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no OpenWhisk API host" in p.stderr
    f = tmp_path / "props"
    f.write_text("APIHOST=http://127.0.0.1:9\nAUTH=u:p\n")
    p = _cli("deploy", "a", "--image", "img", env={"WSK_CONFIG_FILE": str(f)})
    assert p.returncode == 1 and "cannot reach OpenWhisk" in p.stderr and "Traceback" not in p.stderr
    p = _cli("deploy", "a", "--image", "img", "--memory", "1", "--dry-run", env={"WSK_CONFIG_FILE": str(f)})
    assert p.returncode == 2 and "memory" in p.stderr


def test_deploy_refuses_a_concurrency_the_image_cannot_serve(tmp_path):
    f = tmp_path / "props"
    f.write_text("APIHOST=http://127.0.0.1:3233\n")
    env = {"WSK_CONFIG_FILE": str(f)}
    p = _cli("deploy", "a", "--image", "img", "--concurrency", "65", "--dry-run", env=env)
    assert p.returncode == 2 and "SESEMI_THREADS" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = _cli("deploy", "a", "--image", "img", "--concurrency", "12", "--image-threads", "8", "--dry-run", env=env)
    assert p.returncode == 2 and "8 connection threads" in p.stderr, p.stderr
    p = _cli("deploy", "a", "--image", "img", "--concurrency", "8", "--image-threads", "8", "--dry-run", env=env)
    assert p.returncode == 0 and '"final"' in p.stdout and '"provide-api-key"' in p.stdout, p.stderr
