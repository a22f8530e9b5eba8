"""The local OpenWhisk emulator as a process, through the shared REST client:
the action API, blocking invocations and activation records, cold and warm
starts, per-container concurrency, the container cap, keep-alive, /init
failures and a container killed mid-request. Containers run a tiny fake
action (tests/e2e/fake_action.py) so these stay fast."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from bundle_tool.platform.local import client_for, start_emulator
from sesemi.errors import AuthError, Conflict, NotFound
from sesemi.openwhisk import DEVELOPER_ERROR, ActionSpec, Credentials, OpenWhiskClient, load_credentials

FAKE = Path(__file__).with_name("fake_action.py")
KEEP_ALIVE = 2.0


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    work = tmp_path_factory.mktemp("platform")
    srv, wskprops = start_emulator(work, keep_alive_s=KEEP_ALIVE, max_containers=3,
                                   extra=["--image", f"fake={sys.executable} {FAKE}", "--max-wait", "5"])
    yield srv, wskprops, client_for(wskprops)
    srv.stop()


def _auth(wskprops: Path) -> tuple[str, str]:
    return load_credentials(wskprops).basic


def _containers(srv, wskprops, action: str | None = None) -> list[dict]:
    rows = requests.get(srv.url + "/emulator/containers", auth=_auth(wskprops), timeout=5).json()
    return [r for r in rows if action is None or r["action"] == action]


def _deploy(client: OpenWhiskClient, name: str, concurrency: int = 1, **env: str) -> None:
    client.put_action(ActionSpec(name, "fake", 128, 20_000, concurrency, {"X": "init-value", **env}))


def test_action_api_create_get_list_update_delete(platform):
    srv, wskprops, client = platform
    doc = client.put_action(ActionSpec("crud", "fake", 256, 5000, 3, {"X": "1"}, {"p": 2}, {"note": "n"}))
    assert doc["version"] == "0.0.1" and doc["exec"] == {"kind": "blackbox", "image": "fake", "binary": False}
    assert doc["limits"]["concurrency"] == 3 and doc["limits"]["timeout"] == 5000
    assert {"key": "X", "value": "1", "init": True} in doc["parameters"]
    assert client.get_action("crud")["name"] == "crud"
    assert "crud" in [a["name"] for a in client.list_actions()]
    assert client.put_action(ActionSpec("crud", "fake", 512))["version"] == "0.0.2"
    with pytest.raises(Conflict, match="already exists"):
        client.put_action(ActionSpec("crud", "fake"), overwrite=False)
    client.delete_action("crud")
    with pytest.raises(NotFound):
        client.get_action("crud")
    with pytest.raises(NotFound):
        client.invoke("crud", {})
    bad = OpenWhiskClient(Credentials(client.creds.apihost, "nobody:wrong"))
    with pytest.raises(AuthError, match="authentication"):
        bad.list_actions()


def test_cold_then_warm_with_annotations_and_records(platform):
    srv, wskprops, client = platform
    _deploy(client, "hello")
    first = client.invoke("hello", {"echo": 1})
    assert first.success and first.result["x"] == "init-value" and first.result["echo"] == 1
    assert first.cold and first.init_ms is not None and first.wait_ms is not None
    assert first.end_ms - first.start_ms == first.duration_ms >= first.init_ms
    second = client.invoke("hello", {"echo": 2})
    assert second.success and not second.cold and second.init_ms is None
    assert second.result["pid"] == first.result["pid"]          # the same container, warm
    assert second.result["activation_id"] == second.activation_id
    again = client.get_activation(second.activation_id)
    assert again == second
    # result=true returns the result alone, as OpenWhisk does.
    r = requests.post(client.url("actions", "hello", {"blocking": True, "result": True}), json={"echo": 3},
                      auth=_auth(wskprops), timeout=10)
    assert r.status_code == 200 and r.json()["echo"] == 3
    # An application error: 502 with the record, the container kept.
    failed = client.invoke("hello", {"fail": True})
    assert failed.status == "application error" and failed.result["kind"] == "FormatError"
    assert len(_containers(srv, wskprops, "hello")) == 1


def test_concurrency_limit_scales_out(platform):
    srv, wskprops, client = platform
    _deploy(client, "pair", concurrency=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.invoke("pair", {"sleep": 0.8})))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.success for r in results)
    pids = {r.result["pid"] for r in results}
    assert len(pids) == 2                                         # 4 at once, 2 per container
    rows = _containers(srv, wskprops, "pair")
    assert len(rows) == 2 and all(r["peak_inflight"] == 2 for r in rows)


def test_container_cap_makes_activations_wait(platform):
    srv, wskprops, client = platform
    time.sleep(KEEP_ALIVE + 1.5)  # earlier tests' containers idle out
    _deploy(client, "solo", concurrency=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.invoke("solo", {"sleep": 1.0})))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.success for r in results)
    assert len({r.result["pid"] for r in results}) == 3           # the cap is 3 containers
    assert max(r.wait_ms for r in results) >= 800                 # the fourth waited for a free slot


def test_keep_alive_reaps_idle_containers(platform):
    srv, wskprops, client = platform
    _deploy(client, "brief")
    assert client.invoke("brief", {}).cold
    assert not client.invoke("brief", {}).cold
    assert len(_containers(srv, wskprops, "brief")) == 1
    deadline = time.monotonic() + KEEP_ALIVE + 3
    while _containers(srv, wskprops, "brief") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers(srv, wskprops, "brief") == []
    assert client.invoke("brief", {}).cold


def test_init_failure_is_clear_and_discards_the_container(platform):
    srv, wskprops, client = platform
    _deploy(client, "broken", FAIL_INIT="no key service")
    act = client.invoke("broken", {})
    assert act.status == DEVELOPER_ERROR
    assert act.error == "action initialization failed: refused: no key service"
    assert act.result["kind"] == "UnavailableError"
    assert _containers(srv, wskprops, "broken") == []
    # The next activation tries a fresh container, and fails the same clear way.
    assert client.invoke("broken", {}).error.startswith("action initialization failed")


def test_container_killed_mid_request(platform):
    srv, wskprops, client = platform
    _deploy(client, "victim")
    pid = client.invoke("victim", {}).result["pid"]
    out = []
    t = threading.Thread(target=lambda: out.append(client.invoke("victim", {"sleep": 5})))
    t.start()
    deadline = time.monotonic() + 5
    while not any(r["inflight"] for r in _containers(srv, wskprops, "victim")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    t.join(10)
    (act,) = out
    assert act.status == DEVELOPER_ERROR and "exited unexpectedly" in act.error
    assert _containers(srv, wskprops, "victim") == []
    assert client.invoke("victim", {}).cold                      # a new container
