"""The local OpenWhisk emulator's state: actions, containers, activations.

No HTTP here (that is `api.py`): this is what an OpenWhisk controller plus
one invoker do, reduced to what SeSeMI relies on. Derived from apache/openwhisk's
source, which docs/platform.md cites behaviour by behaviour (no code copied):
core/controller/.../controller/Actions.scala (parameter merge, `final`,
annotations amended on create), core/invoker/.../containerpool/ContainerProxy.scala
(initializeAndRun: /init and /run bodies, which failures destroy a container),
common/scala/.../entity/ActivationResult.scala (how an answer is classified),
common/scala/.../containerpool/Container.scala (503 means shutting down),
common/scala/src/main/resources/application.conf (limits).

- a "container" is a local process started from the action's image mapping
  (`images.py`); it is started on demand (cold start), receives POST /init
  once with value.env = the action's `init` parameters, then POST /run per
  activation;
- at most `limits.concurrency` activations run in one container at a time;
  more concurrent activations start more containers (scale-out);
- at most `max_containers` containers exist; at the cap an idle container of
  any action is evicted to make room, else the activation waits (bounded);
- a container idle for `keep_alive_s` is removed (OpenWhisk's default is 10
  minutes); one whose /init fails, whose process dies, or which exceeds the
  time limit is discarded;
- every activation gets a record with start, end, duration and the
  annotations path, kind, limits, timeout, waitTime, and initTime on the
  activation that ran /init only (ContainerProxy.constructWhiskActivation):
  one that waited for a container another started has none, as in OpenWhisk.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import Conflict, FormatError, NotFound, SesemiError
from sesemi.openwhisk import (APPLICATION_ERROR, CONCURRENCY, DEVELOPER_ERROR, INTERNAL_ERROR, MEMORY_MB, STATUS_CODES,
                              SUCCESS, TIMEOUT_MS, check_action_name)

from .images import ImageMap

log = logging.getLogger("sesemi.platform")

STARTING, READY, DEAD = "starting", "ready", "dead"
# The `std` values of application.conf's time-limit, memory, concurrency-limit, log-limit.
DEFAULT_LIMITS = {"timeout": 60_000, "memory": 256, "concurrency": 1, "logs": 10}
# ActivationResult.scala's wording (via http/ErrorResponse.scala's Messages).
ABNORMAL_INIT = "The action did not initialize and exited unexpectedly."
ABNORMAL_RUN = "The action did not produce a valid response and exited unexpectedly."
PARAMS_NOT_ALLOWED = "Request defines parameters that are not allowed (e.g., reserved properties)."


@dataclass
class Settings:
    namespace: str = "guest"
    keep_alive_s: float = 600.0
    max_containers: int = 8
    start_timeout_s: float = 60.0
    max_wait_s: float = 60.0
    blocking_wait_s: float = 60.0
    max_payload_bytes: int = 1 << 20
    work_dir: Path = field(default_factory=lambda: Path("/tmp/sesemi-platform"))
    api_host: str = ""
    api_key: str = ""  # what provide-api-key hands an action: the emulator's AUTH
    max_records: int = 10_000
    # A stock deployment's maxima (application.conf: memory.max 512 m,
    # time-limit.max 5 m, concurrency-limit.max 1); minima 128 MB, 100 ms, 1.
    max_memory_mb: int = 512
    max_timeout_ms: int = 300_000
    max_concurrency: int = 1
    max_response_bytes: int = 1 << 20   # activation.payload.max: larger results are truncated
    max_reschedules: int = 1            # a 503 (runtime shutting down) reschedules the activation


class HealthError(Exception):
    """The container answered 503: its runtime is shutting down (Container.scala)."""


class Throttled(Exception):
    """No container could be had in time: 429, and no activation record."""


class NotAllowed(FormatError):
    """An invocation overrides a `final` parameter: 400."""


class _InitFailed(Exception):
    def __init__(self, result: dict[str, Any], size: int | None = None, timed_out: bool = False) -> None:
        super().__init__(str(result.get("error")))
        self.result = result
        self.size = size
        self.timed_out = timed_out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _truthy(annotations: list[dict[str, Any]], key: str, missing: bool = False) -> bool:
    """Parameters.isTruthy: a present annotation counts unless false-like."""
    for a in annotations:
        if a.get("key") == key:
            return a.get("value") not in (False, None, 0, "")
    return missing


def _env_string(v: Any) -> str:
    """containerInitializer: strings as they are, null as "", the rest as JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    return json_dumps(v).decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


class Container:
    def __init__(self, cid: str, doc: dict[str, Any]) -> None:
        self.id = cid
        self.action = doc["name"]
        self.version = doc["version"]
        self.slots = int(doc["limits"]["concurrency"])
        self.state = STARTING
        self.stale = False
        self.inflight = 0
        self.peak_inflight = 0
        self.activations = 0
        self.created = time.monotonic()
        self.last_used = self.created
        self.ready = threading.Event()
        self.failure: dict[str, Any] | None = None
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""
        self.init_ms: int | None = None
        self.log_path: Path | None = None
        self.dying_since = 0.0
        # One connection pool per container, at most `slots` connections, as
        # OpenWhisk's invoker keeps one client per container: connections are
        # reused, and never more than the action serves at once.
        self.http: urllib3.HTTPConnectionPool | None = None

    def view(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "version": self.version, "state": self.state,
                "stale": self.stale, "pid": self.proc.pid if self.proc else None, "port": self.port,
                "inflight": self.inflight, "peak_inflight": self.peak_inflight, "slots": self.slots,
                "activations": self.activations, "age_s": round(now - self.created, 3),
                "idle_s": round(now - self.last_used, 3) if self.inflight == 0 else 0.0, "init_ms": self.init_ms}


def _bump(version: str) -> str:
    parts = version.split(".")
    try:
        return ".".join(parts[:-1] + [str(int(parts[-1]) + 1)])
    except (ValueError, IndexError):
        return "0.0.1"


def _kv(items: Any, what: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("key"), str) for i in items):
        raise FormatError(f"{what} must be a list of {{key, value}} objects")
    return [dict(i) for i in items]


class Platform:
    def __init__(self, settings: Settings, images: ImageMap) -> None:
        self.s = settings
        self.images = images
        self._cond = threading.Condition()
        self._actions: dict[str, dict[str, Any]] = {}
        self._containers: dict[str, Container] = {}
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._throttled: OrderedDict[str, str] = OrderedDict()
        self._events: dict[str, threading.Event] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._dying: list[Container] = []
        self._setpriv = shutil.which("setpriv")
        # Linux ties PDEATHSIG to the thread that forked, not the process: spawn
        # from one long-lived thread, or a container dies with its activation's thread.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="spawner")
        (self.s.work_dir / "containers").mkdir(parents=True, exist_ok=True)
        interval = max(0.05, min(1.0, self.s.keep_alive_s / 4))
        self._reaper = threading.Thread(target=self._reap_loop, args=(interval,), name="reaper", daemon=True)
        self._reaper.start()

    # -- actions ---------------------------------------------------------------------------------

    def put_action(self, name: str, body: Any, overwrite: bool) -> dict[str, Any]:
        check_action_name(name)
        if not isinstance(body, dict):
            raise FormatError("action body must be a JSON object")
        with self._cond:
            old = self._actions.get(name)
            if old is not None and not overwrite:
                raise Conflict("resource already exists")
            exec_ = body.get("exec", old["exec"] if old else None)
            if not isinstance(exec_, dict):
                raise FormatError("exec is required: {\"kind\": \"blackbox\", \"image\": IMAGE}")
            if exec_.get("kind") != "blackbox" or not isinstance(exec_.get("image"), str) or not exec_["image"]:
                raise FormatError("the emulator runs blackbox actions only: exec must be "
                                  "{\"kind\": \"blackbox\", \"image\": IMAGE}")
            limits = {**DEFAULT_LIMITS, **(old["limits"] if old else {}), **(body.get("limits") or {})}
            for key, lo, hi in (("memory", MEMORY_MB[0], self.s.max_memory_mb),
                                ("timeout", TIMEOUT_MS[0], self.s.max_timeout_ms),
                                ("concurrency", CONCURRENCY[0], self.s.max_concurrency)):
                if not isinstance(limits[key], int) or not lo <= limits[key] <= hi:
                    raise FormatError(f"limits.{key} must be an integer in [{lo}, {hi}] (this platform's "
                                      "limits; see sesemi platform serve --help)")
            annotations = _kv(body["annotations"], "annotations") if "annotations" in body \
                else (old["annotations"] if old else [])
            # Actions.scala amendAnnotations: on create, provide-api-key=false unless
            # given; always an `exec` annotation matching the kind.
            if old is None and not any(a["key"] == "provide-api-key" for a in annotations):
                annotations.append({"key": "provide-api-key", "value": False})
            annotations = [a for a in annotations if a["key"] != "exec"] + [{"key": "exec", "value": "blackbox"}]
            doc: dict[str, Any] = {
                "namespace": self.s.namespace,
                "name": name,
                "version": _bump(old["version"]) if old else "0.0.1",
                "exec": {"kind": "blackbox", "image": exec_["image"], "binary": False},
                "limits": limits,
                "parameters": _kv(body["parameters"], "parameters") if "parameters" in body
                else (old["parameters"] if old else []),
                "annotations": annotations,
                "publish": bool(body.get("publish", old["publish"] if old else False)),
                "updated": _now_ms(),
            }
            self._actions[name] = doc
            if old is not None:
                for c in self._containers.values():
                    if c.action == name:
                        c.stale = True
            self._cond.notify_all()
        log.info("action %s %s (version %s, image %s)", name, "updated" if old else "created", doc["version"],
                 doc["exec"]["image"])
        return dict(doc)

    def get_action(self, name: str) -> dict[str, Any]:
        with self._cond:
            doc = self._actions.get(name)
            if doc is None:
                raise NotFound("The requested resource does not exist.")
            return dict(doc)

    def list_actions(self, limit: int = 30, skip: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            docs = sorted(self._actions.values(), key=lambda d: d["name"])
        keep = ("namespace", "name", "version", "limits", "annotations", "publish", "updated")
        return [{**{k: d[k] for k in keep}, "exec": {"binary": False}} for d in docs[skip:skip + limit]]

    def delete_action(self, name: str) -> dict[str, Any]:
        with self._cond:
            doc = self._actions.pop(name, None)
            if doc is None:
                raise NotFound("The requested resource does not exist.")
            for c in self._containers.values():
                if c.action == name:
                    c.stale = True
            self._cond.notify_all()
        log.info("action %s deleted", name)
        return doc

    # -- activations -----------------------------------------------------------------------------

    def invoke(self, name: str, params: dict[str, Any]) -> tuple[str, threading.Event]:
        doc = self.get_action(name)
        # Actions.scala activate: with `final`, a payload may not name any parameter
        # the action defines (immutableParameters = the defined ones).
        if _truthy(doc["annotations"], "final"):
            defined = {p["key"] for p in doc["parameters"] if p.get("value") is not None}
            if defined & set(params):
                raise NotAllowed(PARAMS_NOT_ALLOWED)
        aid = uuid.uuid4().hex
        done = threading.Event()
        with self._cond:
            self._events[aid] = done
        threading.Thread(target=self._activate, args=(doc, params, aid, time.monotonic(), _now_ms()),
                         name=f"activation-{aid[:8]}", daemon=True).start()
        return aid, done

    def record(self, aid: str) -> tuple[dict[str, Any], bool]:
        """(record, throttled): a throttled activation has no record, only its refusal."""
        with self._cond:
            if aid in self._throttled:
                return {"error": self._throttled[aid]}, True
            rec = self._records.get(aid)
            if rec is None:
                raise NotFound("The requested resource does not exist.")
            return rec, False

    def list_records(self, name: str | None = None, limit: int = 30, skip: int = 0, docs: bool = False,
                     since: int | None = None, upto: int | None = None) -> list[dict[str, Any]]:
        with self._cond:
            recs = [r for r in reversed(self._records.values()) if (name is None or r["name"] == name)
                    and (since is None or r["start"] >= since) and (upto is None or r["start"] <= upto)]
        recs = recs[skip:skip + limit]
        if docs:
            return recs
        # WhiskActivation.summaryAsJson: the summary keeps statusCode, not the response.
        return [{**{k: r[k] for k in ("activationId", "name", "namespace", "version", "start", "end", "duration",
                                      "annotations", "publish")},
                 "statusCode": STATUS_CODES[r["response"]["status"]]} for r in recs]

    def containers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._cond:
            return [c.view(now) for c in self._containers.values()]

    def _store(self, aid: str, rec: dict[str, Any] | None, throttled: str | None = None) -> None:
        with self._cond:
            if rec is not None:
                self._records[aid] = rec
            if throttled is not None:
                self._throttled[aid] = throttled
            while len(self._records) > self.s.max_records:
                self._records.popitem(last=False)
            while len(self._throttled) > self.s.max_records:
                self._throttled.popitem(last=False)
            ev = self._events.pop(aid, None)
        if ev is not None:
            ev.set()

    def _activate(self, doc: dict[str, Any], params: dict[str, Any], aid: str, t0: float,
                  received_ms: int) -> None:
        # As in OpenWhisk (ContainerProxy.constructWhiskActivation): waitTime runs
        # from receipt to the start of /init (cold) or /run (warm); duration runs
        # from there to the end, so a cold one includes initTime.
        timeout_s = doc["limits"]["timeout"] / 1000
        tid = uuid.uuid4().hex  # the transaction id: not the activation id
        env, value = self._partition(doc, params)
        for attempt in range(self.s.max_reschedules + 1):
            start_ms = received_ms
            init_ms: int | None = None
            timed_out = False
            container: Container | None = None
            try:
                container, role = self._acquire(doc, t0)
                if role == "starter":
                    self._start_process(container, doc)
                    t_init = time.monotonic()
                    start_ms = _now_ms()
                    self._init(container, doc, env, aid, tid, timeout_s)
                    init_ms = int((time.monotonic() - t_init) * 1000)
                elif role == "joiner":
                    if not container.ready.wait(self.s.start_timeout_s + timeout_s) or container.failure:
                        raise _InitFailed(container.failure or {"error": ABNORMAL_INIT})
                    start_ms = _now_ms()
                else:
                    start_ms = _now_ms()
                status, result, size, timed_out = self._run(container, doc, value, aid, tid, timeout_s)
            except Throttled as exc:
                self._store(aid, None, throttled=str(exc))
                return
            except HealthError:
                # Container.scala: 503 is ContainerHealthError; the container goes and the
                # activation is rescheduled. Past the bound it ends with no result.
                if attempt < self.s.max_reschedules:
                    continue
                status, result, size = INTERNAL_ERROR, None, None
            except _InitFailed as exc:
                status, result, size, timed_out = DEVELOPER_ERROR, exc.result, exc.size, exc.timed_out
            except Exception as exc:  # noqa: BLE001 - a bug here must still answer the activation
                log.error("activation %s: internal error %s", aid, type(exc).__name__)
                status, result, size = INTERNAL_ERROR, {"error": "internal error in the emulator"}, None
            finally:
                if container is not None:
                    with self._cond:
                        container.inflight -= 1
                        container.activations += 1
                        container.last_used = time.monotonic()
                        self._cond.notify_all()
            break
        end_ms = max(_now_ms(), start_ms)
        ann: list[dict[str, Any]] = [
            {"key": "path", "value": f"{doc['namespace']}/{doc['name']}"},
            {"key": "waitTime", "value": max(0, start_ms - received_ms)},
            {"key": "kind", "value": "blackbox"},
            {"key": "timeout", "value": timed_out},
            # ContainerProxy.constructWhiskActivation writes the action's limits here; the
            # user-events record (common/scala/.../core/connector/Message.scala, Activation.from)
            # takes the activation's memory from it: what a bill is duration x (docs/packing.md).
            {"key": "limits", "value": doc["limits"]},
        ]
        if init_ms is not None:
            ann.append({"key": "initTime", "value": init_ms})
        response: dict[str, Any] = {"status": status, "success": status == SUCCESS}
        if result is not None:
            response["result"] = result
        if size is not None:
            response["size"] = size
        self._store(aid, {
            "namespace": doc["namespace"], "name": doc["name"], "version": doc["version"],
            "subject": doc["namespace"], "activationId": aid, "publish": False,
            "start": start_ms, "end": end_ms, "duration": end_ms - start_ms,
            "response": response, "logs": [], "annotations": ann,
        })

    @staticmethod
    def _partition(doc: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Parameters.merge (the payload wins over the action's parameters), then
        ContainerProxy.partitionArguments: the init parameters' names go to
        /init's env, the rest to /run's value."""
        merged = {**{p["key"]: p.get("value") for p in doc["parameters"]}, **params}
        init_names = {p["key"] for p in doc["parameters"] if p.get("init")}
        env = {k: v for k, v in merged.items() if k in init_names}
        return env, {k: v for k, v in merged.items() if k not in init_names}

    def _ow_fields(self, doc: dict[str, Any], aid: str, tid: str, timeout_s: float) -> dict[str, Any]:
        """initializeAndRun's `environment`, plus api_key with provide-api-key."""
        ns = doc["namespace"]
        fields = {"namespace": ns, "action_name": f"/{ns}/{doc['name']}", "action_version": doc["version"],
                  "activation_id": aid, "transaction_id": tid}
        if _truthy(doc["annotations"], "provide-api-key", missing=True):
            fields["api_key"] = self.s.api_key
        fields["deadline"] = str(_now_ms() + int(timeout_s * 1000))
        return fields

    def _acquire(self, doc: dict[str, Any], t0: float) -> tuple[Container, str]:
        """A slot in a warm container, in a starting one, or a new container."""
        name, version = doc["name"], doc["version"]
        deadline = t0 + self.s.max_wait_s
        with self._cond:
            while True:
                best: Container | None = None
                for c in self._containers.values():
                    if (c.action == name and c.version == version and not c.stale and c.state != DEAD
                            and c.inflight < c.slots):
                        if best is None or (c.state == READY, c.last_used) > (best.state == READY, best.last_used):
                            best = c
                if best is not None:
                    best.inflight += 1
                    best.peak_inflight = max(best.peak_inflight, best.inflight)
                    return best, ("warm" if best.state == READY else "joiner")
                live = [c for c in self._containers.values() if c.state != DEAD]
                if len(live) >= self.s.max_containers:
                    idle = [c for c in live if c.inflight == 0 and c.state == READY]
                    if idle:
                        victim = min(idle, key=lambda c: (not c.stale, c.last_used))
                        self._discard_locked(victim, "evicted to make room")
                        live.remove(victim)
                if len(live) < self.s.max_containers:
                    c = Container(f"c{next(self._ids)}", doc)
                    c.inflight = c.peak_inflight = 1
                    self._containers[c.id] = c
                    return c, "starter"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Throttled(f"Too many concurrent requests in flight: all {len(live)} containers "
                                     f"(the cap) are busy; waited {self.s.max_wait_s:.0f} s")
                self._cond.wait(remaining)

    def _start_process(self, c: Container, doc: dict[str, Any]) -> None:
        try:
            cmd = self.images.resolve(doc["exec"]["image"])
        except SesemiError as exc:
            self._fail(c, {"error": str(exc)})
        c.port = _free_port()
        c.url = f"http://127.0.0.1:{c.port}"
        c.http = urllib3.HTTPConnectionPool("127.0.0.1", c.port, maxsize=c.slots, block=True, retries=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SESEMI_", "__OW_"))}
        env.update(cmd.env)
        env.update({"SESEMI_PORT": str(c.port), "PORT": str(c.port), "SESEMI_HOST": "127.0.0.1",
                    "__OW_API_HOST": self.s.api_host})
        argv = cmd.render(c.port)
        if self._setpriv:  # the container dies with the emulator even if the emulator is killed
            argv = [self._setpriv, "--pdeathsig", "KILL", "--", *argv]
        cdir = self.s.work_dir / "containers" / c.id
        cdir.mkdir(parents=True, exist_ok=True)
        c.log_path = self.s.work_dir / "containers" / f"{c.id}.log"
        with open(c.log_path, "ab") as logf:
            try:
                c.proc = self._spawner.submit(subprocess.Popen, argv, stdout=logf, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env, cwd=cdir).result()
            except OSError as exc:
                self._fail(c, {"error": f"cannot start the container for image {doc['exec']['image']!r}: "
                                        f"{exc.strerror or type(exc).__name__}"})
        deadline = time.monotonic() + self.s.start_timeout_s
        while True:
            code = c.proc.poll() if c.proc is not None else -1
            if code is not None:
                self._fail(c, {"error": f"the container exited during start (exit code {code}); "
                                        f"log: {c.log_path}"})
            try:
                with socket.create_connection(("127.0.0.1", c.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._fail(c, {"error": f"the container did not listen within {self.s.start_timeout_s:.0f} s"})
            time.sleep(0.02)

    @staticmethod
    def _post(c: Container, path: str, body: dict[str, Any], timeout_s: float) -> urllib3.BaseHTTPResponse:
        assert c.http is not None
        return c.http.request("POST", path, body=json_dumps(body), headers={"Content-Type": "application/json"},
                              timeout=urllib3.Timeout(connect=min(10.0, timeout_s), read=timeout_s))

    def _init(self, c: Container, doc: dict[str, Any], env: dict[str, Any], aid: str, tid: str,
              timeout_s: float) -> None:
        # WhiskAction.containerInitializer: name, binary, main, env (every value a
        # string); `code` only when the action has code (a blackbox has none). env
        # adds "__OW_" + each initializeAndRun field; __OW_API_HOST is in the
        # container's process env instead (DockerContainerFactory).
        ow = {f"__OW_{k.upper()}": v for k, v in self._ow_fields(doc, aid, tid, timeout_s).items()}
        body = {"value": {"name": doc["name"], "binary": False, "main": "main",
                          "env": {k: _env_string(v) for k, v in {**env, **ow}.items()}}}
        t0 = time.monotonic()
        try:
            resp = self._post(c, "/init", body, timeout_s)
        except urllib3.exceptions.TimeoutError:
            self._fail(c, {"error": f"The action exceeded its time limits of {doc['limits']['timeout']} "
                                    "milliseconds during initialization."}, timed_out=True)
        except urllib3.exceptions.HTTPError:
            self._fail(c, {"error": ABNORMAL_INIT})
        if resp.status == 503:
            self._discard(c, "503 at /init: runtime shutting down")
            c.failure = {"error": ABNORMAL_INIT}
            c.ready.set()
            raise HealthError()
        if resp.status != 200:
            # processInitResponseContent: the object's `error` field, else the body quoted.
            text = resp.data.decode("utf-8", "replace")
            try:
                obj = json_loads(resp.data)
            except JSONDecodeError:
                obj = None
            err = obj.get("error") if isinstance(obj, dict) and "error" in obj else \
                f"The action failed during initialization{': ' + text if text else '.'}"
            self._fail(c, {"error": err}, size=len(text))
        c.init_ms = int((time.monotonic() - t0) * 1000)
        with self._cond:
            if c.state == STARTING:
                c.state = READY
                c.last_used = time.monotonic()
            self._cond.notify_all()
        c.ready.set()
        log.info("container %s for %s ready (init %d ms)", c.id, doc["name"], c.init_ms)

    def _run(self, c: Container, doc: dict[str, Any], value: dict[str, Any], aid: str, tid: str,
             timeout_s: float) -> tuple[str, dict[str, Any] | list[Any] | None, int | None, bool]:
        """(status, result, size, timed out), classified as processRunResponseContent
        does. A developer error destroys the container ("Failed during use of
        warm container"); success and application errors keep it."""
        body = {"value": value, **self._ow_fields(doc, aid, tid, timeout_s)}
        try:
            resp = self._post(c, "/run", body, timeout_s)
        except urllib3.exceptions.TimeoutError:
            self._discard(c, "time limit exceeded")
            return DEVELOPER_ERROR, {"error": f"The action exceeded its time limits of "
                                              f"{doc['limits']['timeout']} milliseconds."}, None, True
        except urllib3.exceptions.HTTPError:
            self._discard(c, "connection lost during /run")
            return DEVELOPER_ERROR, {"error": ABNORMAL_RUN}, None, False
        if resp.status == 503:
            self._discard(c, "503 at /run: runtime shutting down")
            raise HealthError()
        data = resp.data
        if len(data) > self.s.max_response_bytes:
            # Truncated by the invoker: an application error, the container kept.
            return APPLICATION_ERROR, {"error": (
                f"The action produced a response that exceeded the allowed length: {len(data)} > "
                f"{self.s.max_response_bytes} bytes. The truncated response was: "
                f"{data[:self.s.max_response_bytes].decode('utf-8', 'replace')}")}, len(data), False
        text = data.decode("utf-8", "replace")
        size = len(text)
        invalid = f"The action did not produce a valid JSON or JSON Array response{': ' + text if text else '.'}"
        try:
            result = json_loads(data)
        except JSONDecodeError:
            result = invalid
        if resp.status == 200 and isinstance(result, list):
            return SUCCESS, result, size, False
        if resp.status == 200 and isinstance(result, dict):
            if "error" in result:
                return APPLICATION_ERROR, {"error": result["error"]}, size, False
            return SUCCESS, result, size, False
        self._discard(c, f"developer error at /run (HTTP {resp.status})")
        err = result["error"] if isinstance(result, dict) and "error" in result else invalid
        return DEVELOPER_ERROR, {"error": err}, size, False

    # -- container removal -----------------------------------------------------------------------

    def _fail(self, c: Container, result: dict[str, Any], size: int | None = None,
              timed_out: bool = False) -> None:
        c.failure = result
        self._discard(c, "initialization failed")
        c.ready.set()
        raise _InitFailed(result, size, timed_out)

    def _discard(self, c: Container, why: str) -> None:
        with self._cond:
            self._discard_locked(c, why)

    def _discard_locked(self, c: Container, why: str) -> None:
        if c.state == DEAD and c.id not in self._containers:
            return
        c.state = DEAD
        c.dying_since = time.monotonic()
        self._containers.pop(c.id, None)
        if c.proc is not None and c.proc.poll() is None:
            c.proc.terminate()
        if c.proc is not None:
            self._dying.append(c)
        if c.http is not None:
            c.http.close()
        self._cond.notify_all()
        log.info("container %s for %s removed: %s", c.id, c.action, why)

    def _reap_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._cond:
                for c in list(self._containers.values()):
                    if c.state != READY or c.inflight:
                        continue
                    if c.proc is not None and c.proc.poll() is not None:
                        self._discard_locked(c, f"process exited with {c.proc.returncode}")
                    elif c.stale:
                        self._discard_locked(c, "action updated or deleted")
                    elif now - c.last_used >= self.s.keep_alive_s:
                        self._discard_locked(c, f"idle for {self.s.keep_alive_s:g} s (keep-alive)")
                dying, self._dying = self._dying, []
            for c in dying:
                if not self._finish(c, 0.0):
                    with self._cond:
                        self._dying.append(c)

    @staticmethod
    def _finish(c: Container, grace: float) -> bool:
        """True once the process is gone; kills it after its grace period."""
        assert c.proc is not None
        try:
            c.proc.wait(grace)
            return True
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - c.dying_since > 3 or grace > 0:
            c.proc.kill()
            try:
                c.proc.wait(2)
            except subprocess.TimeoutExpired:
                return False
            return True
        return False

    def shutdown(self) -> None:
        self._stop.set()
        with self._cond:
            for c in list(self._containers.values()):
                self._discard_locked(c, "emulator stopping")
            dying, self._dying = self._dying, []
        for c in dying:
            self._finish(c, 3.0)
