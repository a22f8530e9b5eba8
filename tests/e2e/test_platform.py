"""The local OpenWhisk emulator as a process, through the shared REST client:
the action API, blocking invocations and activation records, cold and warm
starts, per-container concurrency, the container cap, keep-alive, /init
failures and a container killed mid-request. Containers run a tiny fake
action (tests/e2e/fake_action.py) so these stay fast."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from bundle_tool.testing.openwhisk_local import client_for, start_emulator
from sesemi.errors import AuthError, Conflict, FormatError, NotFound
from sesemi.openwhisk import (APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR, SUCCESS, ActionSpec, Credentials,
                              OpenWhiskClient, load_credentials)

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
    # An application error: 502 with the record, only `error` kept, the container kept.
    failed = client.invoke("hello", {"answer": "apperr"})
    assert failed.status == "application error"
    assert failed.result == {"error": {"kind": "FormatError", "status": 400, "message": "bad"}}
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
    # processInitResponseContent: the answer's `error` value, as it is.
    assert act.result == {"error": {"kind": "UnavailableError", "status": 503, "message": "refused: no key service"}}
    assert act.error == "refused: no key service"
    assert _containers(srv, wskprops, "broken") == []
    # The next activation tries a fresh container, and fails the same clear way.
    assert client.invoke("broken", {}).error == "refused: no key service"


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


def _raw(client: OpenWhiskClient, wskprops: Path, name: str, payload: dict, **query) -> requests.Response:
    return requests.post(client.url("actions", name, {"blocking": True, **query}), json=payload,
                         auth=_auth(wskprops), timeout=30)


def test_answers_are_classified_as_openwhisk_does(platform):
    """Case by case, as apache/openwhisk classifies a /run answer:
    common/scala/src/main/scala/org/apache/openwhisk/core/entity/ActivationResult.scala
    (processRunResponseContent: a JSON array is a success), and
    common/scala/src/main/scala/org/apache/openwhisk/core/containerpool/Container.scala
    with core/invoker/src/main/scala/org/apache/openwhisk/core/containerpool/ContainerProxy.scala
    (a 503 is ContainerHealthError: the container is destroyed and the job rescheduled)."""
    srv, wskprops, client = platform
    _deploy(client, "kinds")
    pid = client.invoke("kinds", {}).result["pid"]
    arr = _raw(client, wskprops, "kinds", {"answer": "array"})
    assert arr.status_code == 200 and arr.json() == [1, 2, 3]          # an array is a success, sent alone
    big = client.invoke("kinds", {"answer": "big"})                     # over 1 MiB: application error
    assert big.status == APPLICATION_ERROR and "exceeded the allowed length" in big.error
    assert client.invoke("kinds", {}).result["pid"] == pid              # both kept the container
    dev = client.invoke("kinds", {"answer": "deverr"})                  # non-200: developer error, {error} only
    assert dev.status == DEVELOPER_ERROR and dev.result == {"error": "bad request from the fake"}
    again = client.invoke("kinds", {})
    assert again.cold and again.result["pid"] != pid                    # ... and the warm container went
    # 503: the runtime is shutting down. Container destroyed, activation rescheduled once
    # (it meets 503 again on the new container), then it ends without a result.
    down = client.invoke("kinds", {"answer": "shutdown"})
    assert down.status == INTERNAL_ERROR
    rec = requests.get(client.url("activations", down.activation_id), auth=_auth(wskprops), timeout=5).json()
    assert "result" not in rec["response"]
    assert _containers(srv, wskprops, "kinds") == []


def test_container_bodies_parameters_and_final(platform):
    """ContainerProxy.initializeAndRun's bodies; Parameters.merge + partitionArguments; `final`."""
    srv, wskprops, client = platform
    client.put_action(ActionSpec("bodies", "fake", 128, 20_000, 1, {"X": "init-value", "N": "1"}, {"p": 1},
                                 {"final": False}))
    # The payload wins over an init parameter: it reaches /init's env of the cold
    # container and is removed from /run's value.
    act = client.invoke("bodies", {"show": True, "X": "from-payload", "echo": 5})
    init, run = act.result["init"], act.result["run"]
    assert set(init) == {"value"} and "code" not in init["value"]
    assert init["value"]["name"] == "bodies" and init["value"]["main"] == "main" and init["value"]["binary"] is False
    env = init["value"]["env"]
    assert env["X"] == "from-payload" and env["N"] == "1"
    ow = {k for k in env if k.startswith("__OW_")}
    assert ow == {"__OW_ACTIVATION_ID", "__OW_TRANSACTION_ID", "__OW_DEADLINE", "__OW_NAMESPACE",
                  "__OW_ACTION_NAME", "__OW_ACTION_VERSION"}                # provide-api-key=false: no key
    assert all(isinstance(v, str) for v in env.values())
    assert act.result["proc_api_host"] == client.creds.apihost        # __OW_API_HOST: process env only
    assert run["value"] == {"show": True, "echo": 5, "p": 1}
    assert set(run) == {"value", "namespace", "action_name", "action_version", "activation_id", "transaction_id",
                        "deadline"}
    assert run["activation_id"] == act.activation_id != run["transaction_id"]
    # With `final` (what sesemi deploy sets), overriding a defined parameter is a 400.
    client.put_action(ActionSpec("bodies", "fake", 128, 20_000, 1, {"X": "init-value"}))
    doc = client.get_action("bodies")
    ann = {a["key"]: a["value"] for a in doc["annotations"]}
    assert ann["final"] is True and ann["provide-api-key"] is False and ann["exec"] == "blackbox"
    r = _raw(client, wskprops, "bodies", {"X": "evil"})
    assert r.status_code == 400 and r.json()["error"].startswith("Request defines parameters that are not allowed")
    assert len(r.json()["code"]) == 32
    with pytest.raises(FormatError):
        client.invoke("bodies", {"X": "evil"})
    assert client.invoke("bodies", {"echo": 1}).success


def test_only_the_activation_that_ran_init_carries_init_time(platform):
    """core/invoker/src/main/scala/org/apache/openwhisk/core/containerpool/ContainerProxy.scala,
    constructWhiskActivation: the annotations are limits, path, kind, timeout,
    waitTime and, on the activation that ran /init only, initTime. There is no
    coldStart annotation; an activation that waited for a container another one
    started has no initTime, and its waitTime holds the wait."""
    srv, wskprops, client = platform
    _deploy(client, "joined", concurrency=2, INIT_SLEEP="0.6")
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(client.invoke("joined", {})))]
    threads[0].start()
    time.sleep(0.2)                                   # the first is in /init: the second joins its container
    threads.append(threading.Thread(target=lambda: got.append(client.invoke("joined", {}))))
    threads[1].start()
    for t in threads:
        t.join(30)
    assert len(got) == 2 and all(a.success for a in got)
    assert len({a.result["pid"] for a in got}) == 1   # one container
    starter, joiner = sorted(got, key=lambda a: "initTime" not in a.annotations)
    assert all("coldStart" not in a.annotations for a in got)
    assert starter.cold and starter.init_ms is not None and starter.init_ms >= 500
    assert not joiner.cold and joiner.init_ms is None
    assert joiner.wait_ms >= 200                      # it waited for the start it joined
    assert {"path", "kind", "limits", "timeout", "waitTime"} <= set(joiner.annotations) \
        <= {"path", "kind", "limits", "timeout", "waitTime", "initTime", "causedBy", "binding"}


def test_records_and_rest_shapes(platform):
    """WhiskActivation/ActivationResponse.toExtendedJson, ErrorResponse, Activations.scala."""
    srv, wskprops, client = platform
    _deploy(client, "recs")
    before = int(time.time() * 1000)
    r = _raw(client, wskprops, "recs", {"echo": 1})
    assert r.status_code == 200 and r.headers["x-openwhisk-activation-id"] == r.json()["activationId"]
    rec = r.json()
    assert set(rec["response"]) == {"status", "success", "result", "size"} and "statusCode" not in rec
    # size: the length of the answer as the container sent it (the fake puts spaces in).
    assert rec["response"]["size"] == len(json.dumps(rec["response"]["result"]))
    ann = {a["key"]: a["value"] for a in rec["annotations"]}
    assert ann["timeout"] is False and {"path", "kind", "limits", "waitTime", "initTime"} <= set(ann)
    auth = _auth(wskprops)
    acts = client.url("activations")
    rows = requests.get(acts, params={"name": "recs", "since": before}, auth=auth, timeout=5).json()
    assert [x["activationId"] for x in rows] == [rec["activationId"]] and rows[0]["statusCode"] == 0
    assert requests.get(acts, params={"name": "recs", "upto": before - 1}, auth=auth, timeout=5).json() == []
    docs = requests.get(acts, params={"name": "recs", "docs": "true"}, auth=auth, timeout=5).json()
    assert docs[0]["response"]["result"]["echo"] == 1
    bad = requests.get(acts, params={"limit": 201}, auth=auth, timeout=5)
    assert bad.status_code == 400 and "range of 0 to 200" in bad.json()["error"] and bad.json()["code"]
    logs = requests.get(f"{acts}/{rec['activationId']}/logs", auth=auth, timeout=5)
    assert logs.status_code == 200 and logs.json() == {"logs": []}
    missing = requests.get(f"{acts}/{'0' * 32}", auth=auth, timeout=5)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "code"}
    dup = requests.put(client.url("actions", "recs"), json={"exec": {"kind": "blackbox", "image": "fake"}},
                       auth=auth, timeout=5)
    assert dup.status_code == 409 and dup.json()["error"] == "resource already exists" and dup.json()["code"]
    # ?timeout= (ms) shortens the blocking wait: 202 with the id, then the record.
    slow = _raw(client, wskprops, "recs", {"sleep": 1.0}, timeout=100)
    assert slow.status_code == 202 and slow.headers["x-openwhisk-activation-id"] == slow.json()["activationId"]
    assert _raw(client, wskprops, "recs", {}, timeout=0).status_code == 400
    # The stock maximum of limits.concurrency is 1 unless the platform raises it: here 64.
    assert client.put_action(ActionSpec("recs", "fake", 128, 20_000, 64)).get("limits")["concurrency"] == 64
    with pytest.raises(FormatError, match="limits.concurrency"):
        client.put_action(ActionSpec("recs", "fake", 128, 20_000, 65))
    assert client.invoke("recs", {}).status == SUCCESS


def test_throttling_is_a_429_without_a_record_and_publish_is_kept(tmp_path):
    """Throttled activations leave no record (OpenWhisk refuses them before one
    exists); an update without `publish` keeps it (Actions.scala)."""
    srv, wskprops = start_emulator(tmp_path, max_containers=1,
                                   extra=["--image", f"fake={sys.executable} {FAKE}", "--max-wait", "0"])
    try:
        client = client_for(wskprops)
        auth = _auth(wskprops)
        r = requests.put(client.url("actions", "one", {"overwrite": True}), auth=auth, timeout=10,
                         json={"exec": {"kind": "blackbox", "image": "fake"}, "publish": True})
        assert r.json()["publish"] is True
        r = requests.put(client.url("actions", "one", {"overwrite": True}), auth=auth, timeout=10,
                         json={"limits": {"memory": 128}})
        assert r.json()["publish"] is True and r.json()["version"] == "0.0.2"
        busy = requests.post(client.url("actions", "one"), json={"sleep": 2.0}, auth=auth, timeout=10)
        assert busy.status_code == 202
        deadline = time.monotonic() + 10
        while not any(c["inflight"] for c in _containers(srv, wskprops)) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = _raw(client, wskprops, "one", {})
        assert r.status_code == 429 and set(r.json()) == {"error", "code"}, r.text
        assert "Too many concurrent requests" in r.json()["error"]
        aid = r.headers["x-openwhisk-activation-id"]
        assert requests.get(client.url("activations", aid), auth=auth, timeout=5).status_code == 404
        rows = requests.get(client.url("activations"), auth=auth, timeout=5).json()
        assert aid not in {x["activationId"] for x in rows}
    finally:
        srv.stop()
