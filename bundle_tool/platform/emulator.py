"""The local OpenWhisk emulator's state: actions, containers, activations.

No HTTP here (that is `api.py`): this is what an OpenWhisk controller plus
one invoker do, reduced to what SeSeMI relies on:

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
  annotations path, kind, limits, waitTime, initTime (cold starts only) and
  coldStart.
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
DEFAULT_LIMITS = {"timeout": 60_000, "memory": 256, "concurrency": 1, "logs": 10}


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
    max_records: int = 10_000


class _InitFailed(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("error"))
        self.result = result


class _Throttled(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self._throttled: set[str] = set()
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
                raise Conflict("resource already exists (use ?overwrite=true to update)")
            exec_ = body.get("exec", old["exec"] if old else None)
            if not isinstance(exec_, dict):
                raise FormatError("exec is required: {\"kind\": \"blackbox\", \"image\": IMAGE}")
            if exec_.get("kind") != "blackbox" or not isinstance(exec_.get("image"), str) or not exec_["image"]:
                raise FormatError("the emulator runs blackbox actions only: exec must be "
                                  "{\"kind\": \"blackbox\", \"image\": IMAGE}")
            limits = {**DEFAULT_LIMITS, **(old["limits"] if old else {}), **(body.get("limits") or {})}
            for key, (lo, hi) in (("memory", MEMORY_MB), ("timeout", TIMEOUT_MS), ("concurrency", CONCURRENCY)):
                if not isinstance(limits[key], int) or not lo <= limits[key] <= hi:
                    raise FormatError(f"limits.{key} must be an integer in [{lo}, {hi}]")
            doc = {
                "namespace": self.s.namespace,
                "name": name,
                "version": _bump(old["version"]) if old else "0.0.1",
                "exec": {"kind": "blackbox", "image": exec_["image"], "binary": False},
                "limits": limits,
                "parameters": _kv(body["parameters"], "parameters") if "parameters" in body
                else (old["parameters"] if old else []),
                "annotations": _kv(body["annotations"], "annotations") if "annotations" in body
                else (old["annotations"] if old else []),
                "publish": bool(body.get("publish", False)),
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
        aid = uuid.uuid4().hex
        done = threading.Event()
        with self._cond:
            self._events[aid] = done
        threading.Thread(target=self._activate, args=(doc, params, aid, time.monotonic(), _now_ms()),
                         name=f"activation-{aid[:8]}", daemon=True).start()
        return aid, done

    def record(self, aid: str) -> tuple[dict[str, Any], bool]:
        with self._cond:
            rec = self._records.get(aid)
            if rec is None:
                raise NotFound("The requested resource does not exist.")
            return rec, aid in self._throttled

    def list_records(self, name: str | None = None, limit: int = 30, skip: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            recs = [r for r in reversed(self._records.values()) if name is None or r["name"] == name]
        return [{k: r[k] for k in ("activationId", "name", "namespace", "version", "start", "end", "duration",
                                   "statusCode", "annotations")} for r in recs[skip:skip + limit]]

    def containers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._cond:
            return [c.view(now) for c in self._containers.values()]

    def _store(self, rec: dict[str, Any], throttled: bool) -> None:
        with self._cond:
            self._records[rec["activationId"]] = rec
            if throttled:
                self._throttled.add(rec["activationId"])
            while len(self._records) > self.s.max_records:
                old, _ = self._records.popitem(last=False)
                self._throttled.discard(old)
            ev = self._events.pop(rec["activationId"], None)
        if ev is not None:
            ev.set()

    def _activate(self, doc: dict[str, Any], params: dict[str, Any], aid: str, t0: float,
                  received_ms: int) -> None:
        # As in OpenWhisk: waitTime runs from receipt to the start of /init (cold)
        # or /run (warm), so it holds queueing and process start; duration
        # runs from there to the end, so a cold one includes initTime.
        timeout_s = doc["limits"]["timeout"] / 1000
        start_ms = received_ms
        init_ms: int | None = None
        cold = False
        throttled = False
        container: Container | None = None
        try:
            container, role = self._acquire(doc, t0)
            cold = role != "warm"
            if role == "starter":
                self._start_process(container, doc)
                t_init = time.monotonic()
                start_ms = _now_ms()
                self._init(container, doc, timeout_s)
                init_ms = int((time.monotonic() - t_init) * 1000)
            elif role == "joiner":
                if not container.ready.wait(self.s.start_timeout_s + timeout_s) or container.failure:
                    raise _InitFailed(container.failure or {"error": "the container did not become ready"})
                start_ms = _now_ms()
            else:
                start_ms = _now_ms()
            status, result = self._run(container, doc, params, aid, timeout_s)
        except _Throttled as exc:
            status, result, throttled = INTERNAL_ERROR, {"error": str(exc)}, True
            start_ms = _now_ms()
        except _InitFailed as exc:
            status, result = DEVELOPER_ERROR, exc.result
        except Exception as exc:  # a bug here must still answer the activation
            log.error("activation %s: internal error %s", aid, type(exc).__name__)
            status, result = INTERNAL_ERROR, {"error": "internal error in the emulator"}
        finally:
            if container is not None:
                with self._cond:
                    container.inflight -= 1
                    container.activations += 1
                    container.last_used = time.monotonic()
                    self._cond.notify_all()
        end_ms = max(_now_ms(), start_ms)
        ann: list[dict[str, Any]] = [
            {"key": "path", "value": f"{doc['namespace']}/{doc['name']}"},
            {"key": "waitTime", "value": max(0, start_ms - received_ms)},
            {"key": "kind", "value": "blackbox"},
            {"key": "limits", "value": doc["limits"]},
        ]
        if init_ms is not None:
            ann.append({"key": "initTime", "value": init_ms})
        ann.append({"key": "coldStart", "value": cold})
        self._store({
            "namespace": doc["namespace"], "name": doc["name"], "version": doc["version"],
            "subject": doc["namespace"], "activationId": aid, "publish": False,
            "start": start_ms, "end": end_ms, "duration": end_ms - start_ms,
            "statusCode": STATUS_CODES[status],
            "response": {"status": status, "statusCode": STATUS_CODES[status], "success": status == SUCCESS,
                         "result": result},
            "logs": [], "annotations": ann,
        }, throttled)

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
                    raise _Throttled(f"Too many concurrent requests in flight: all {len(live)} containers "
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
        env.update({"SESEMI_PORT": str(c.port), "PORT": str(c.port), "SESEMI_HOST": "127.0.0.1"})
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
            code = c.proc.poll()
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

    def _init(self, c: Container, doc: dict[str, Any], timeout_s: float) -> None:
        ns, name = doc["namespace"], doc["name"]
        env = {p["key"]: p.get("value") for p in doc["parameters"] if p.get("init")}
        env.update({"__OW_NAMESPACE": ns, "__OW_ACTION_NAME": f"/{ns}/{name}",
                    "__OW_ACTION_VERSION": doc["version"], "__OW_API_HOST": self.s.api_host})
        body = {"value": {"name": name, "main": "main", "code": "", "binary": False, "env": env}}
        t0 = time.monotonic()
        try:
            resp = self._post(c, "/init", body, timeout_s)
        except urllib3.exceptions.TimeoutError:
            self._fail(c, {"error": f"action initialization failed: it exceeded the time limit of "
                                    f"{doc['limits']['timeout']} ms"})
        except urllib3.exceptions.HTTPError:
            self._fail(c, {"error": "action initialization failed: the container closed the connection "
                                    "(did it exit?)"})
        if resp.status != 200:
            try:
                err = json_loads(resp.data)
            except JSONDecodeError:
                err = {}
            err = err if isinstance(err, dict) else {}
            result = {"error": f"action initialization failed: {err.get('error') or f'HTTP {resp.status}'}"}
            if isinstance(err.get("kind"), str):
                result["kind"] = err["kind"]
            self._fail(c, result)
        c.init_ms = int((time.monotonic() - t0) * 1000)
        with self._cond:
            if c.state == STARTING:
                c.state = READY
                c.last_used = time.monotonic()
            self._cond.notify_all()
        c.ready.set()
        log.info("container %s for %s ready (init %d ms)", c.id, name, c.init_ms)

    def _run(self, c: Container, doc: dict[str, Any], params: dict[str, Any], aid: str,
             timeout_s: float) -> tuple[str, dict[str, Any]]:
        ns, name = doc["namespace"], doc["name"]
        defaults = {p["key"]: p.get("value") for p in doc["parameters"] if not p.get("init")}
        body = {"value": {**defaults, **params}, "namespace": ns, "action_name": f"/{ns}/{name}",
                "action_version": doc["version"], "activation_id": aid, "transaction_id": aid,
                "deadline": str(_now_ms() + int(timeout_s * 1000))}
        try:
            resp = self._post(c, "/run", body, timeout_s)
        except urllib3.exceptions.TimeoutError:
            self._discard(c, "time limit exceeded")
            return DEVELOPER_ERROR, {"error": f"The action exceeded its time limit of "
                                              f"{doc['limits']['timeout']} milliseconds."}
        except urllib3.exceptions.HTTPError:
            self._discard(c, "connection lost during /run")
            return DEVELOPER_ERROR, {"error": "The action did not produce a valid response and exited unexpectedly."}
        try:
            result = json_loads(resp.data)
        except JSONDecodeError:
            return DEVELOPER_ERROR, {"error": "The action did not produce a valid JSON response."}
        if not isinstance(result, dict):
            return DEVELOPER_ERROR, {"error": "The action did not return a dictionary."}
        if resp.status == 200 and "error" not in result:
            return SUCCESS, result
        if "error" in result:
            return APPLICATION_ERROR, result
        return DEVELOPER_ERROR, {"error": f"The action answered HTTP {resp.status} without an error."}

    # -- container removal -----------------------------------------------------------------------

    def _fail(self, c: Container, result: dict[str, Any]) -> None:
        c.failure = result
        self._discard(c, "initialization failed")
        c.ready.set()
        raise _InitFailed(result)

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
