"""The front end for several routers: one URL for clients, each request
forwarded by its envelope's `model_id` to the one router that serves the
model (router/front_config.py derives the table from the routers' own config
files). It holds no state beyond counters, so several front-end processes
may run side by side; each router keeps its pools' claims and queues, which
is why a pack is served by exactly one router.

Like the router, it reads `model_id` and nothing else of a request, forwards
the body unchanged, holds no key and never logs a body.

- `POST /v1/infer`, `POST /run`: as the router's (and the action's).
- `GET /healthz`: the front end itself.
- `GET /routers`: probes each router's /healthz; 503 naming every router that
  is down or runs another model set than the front end read (drift).
- `GET /stats`: counters of the worker process that answers.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
from flask import Flask, Response, request

from sesemi.encoding import JSONDecodeError, json_loads
from sesemi.errors import FormatError, NotFound
from sesemi.http_errors import error_body
from sesemi.names import check_model_id
from sesemi import urllib3_errors
from sesemi.timeouts import Timeouts, explain

from .app import json_app, json_response
from .front_config import Backend, FrontConfig
from .metrics import Exporter

log = logging.getLogger("sesemi.router.front")

# Headers of the router's answer that mean something to the client.
_PASS_HEADERS = ("Retry-After", "X-Sesemi-Action", "X-Sesemi-Attempts")
PROBE_READ_S = 2.0


class Front:
    def __init__(self, cfg: FrontConfig, pool_maxsize: int = 64) -> None:
        self.cfg = cfg
        self.routes = cfg.routes()
        self._http = urllib3.PoolManager(maxsize=pool_maxsize, retries=False)
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {"requests": 0, "forwarded": 0, "unknown_model": 0,
                                         "router_unavailable": 0}
        self.per_router: dict[str, int] = {b.name: 0 for b in cfg.backends}

    def _count(self, key: str, router: str | None = None) -> None:
        with self._lock:
            self.counters[key] += 1
            if router is not None:
                self.per_router[router] += 1

    def backend_for(self, raw: bytes) -> Backend:
        try:
            body = json_loads(raw)
        except JSONDecodeError:
            raise FormatError("body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("value"), dict):
            raise FormatError("body must be {\"value\": envelope}")
        model = check_model_id(body["value"].get("model_id"))
        backend = self.routes.get(model)
        if backend is None:
            self._count("unknown_model")
            raise NotFound(f"model {model} is not served by any router behind this front end")
        return backend

    def forward(self, path: str, raw: bytes) -> Response:
        self._count("requests")
        b = self.backend_for(raw)
        t = Timeouts(self.cfg.connect_timeout_s, b.read_timeout_s)
        what = f"router {b.name}"
        try:
            resp = self._http.request("POST", b.url + path, body=raw, headers={"Content-Type": "application/json"},
                                      timeout=urllib3.Timeout(connect=t.connect_s, read=t.read_s))
        except urllib3.exceptions.HTTPError as exc:
            self._count("router_unavailable")
            err = explain(exc, what, b.url, t, bound_of=urllib3_errors.bound_of)
            log.warning("%s", err)
            return json_response(error_body(err), err.http_status, {"Retry-After": "1", "X-Sesemi-Router": b.name})
        if not resp.headers.get("Content-Type", "").startswith("application/json"):
            self._count("router_unavailable")
            log.warning("%s answered HTTP %d without a JSON body", what, resp.status)
            return json_response({"error": f"{what} answered HTTP {resp.status} without a JSON body",
                                  "kind": "UnavailableError"}, 502, {"X-Sesemi-Router": b.name})
        self._count("forwarded", b.name)
        headers = {h: resp.headers[h] for h in _PASS_HEADERS if h in resp.headers}
        headers["X-Sesemi-Router"] = b.name
        return Response(resp.data, status=resp.status, mimetype="application/json", headers=headers)

    def probe(self, b: Backend) -> dict[str, Any]:
        row: dict[str, Any] = {"name": b.name, "url": b.url, "models": len(b.models)}
        t = Timeouts(self.cfg.connect_timeout_s, min(PROBE_READ_S, b.read_timeout_s))
        try:
            resp = self._http.request("GET", b.url + "/healthz",
                                      timeout=urllib3.Timeout(connect=t.connect_s, read=t.read_s))
            doc = json_loads(resp.data)
        except urllib3.exceptions.HTTPError as exc:
            return {**row, "state": "down", "reason": str(explain(exc, f"router {b.name}", b.url, t, bound_of=urllib3_errors.bound_of))}
        except JSONDecodeError:
            return {**row, "state": "down", "reason": f"/healthz answered HTTP {resp.status} without JSON"}
        if resp.status != 200 or not isinstance(doc, dict):
            return {**row, "state": "down", "reason": f"/healthz answered HTTP {resp.status}"}
        if doc.get("models_sha256") != b.models_sha256:
            return {**row, "state": "drift",
                    "reason": "the router serves another model set than its config file here says: "
                              "restart the front end after changing a router's config"}
        return {**row, "state": "ok"}

    def probe_all(self) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=min(16, len(self.cfg.backends))) as ex:
            return list(ex.map(self.probe, self.cfg.backends))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"counters": dict(self.counters), "forwarded_per_router": dict(self.per_router)}


def create_app(front: Front) -> Flask:
    app = json_app("sesemi.router.front", front.cfg.max_body_bytes, "the front end")

    def infer() -> Response:
        return front.forward(request.path, request.get_data())

    app.add_url_rule("/run", "run", infer, methods=["POST"])
    app.add_url_rule("/v1/infer", "infer", infer, methods=["POST"])

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"ok": True, "routers": len(front.cfg.backends), "models": len(front.routes)})

    @app.get("/routers")
    def routers() -> Response:
        rows = front.probe_all()
        ok = all(r["state"] == "ok" for r in rows)
        return json_response({"ok": ok, "routers": rows}, 200 if ok else 503)

    @app.get("/stats")
    def stats() -> Response:
        return json_response(front.stats())

    def snapshot():
        with front._lock:
            return dict(front.counters), {"router:forwarded_by_router": dict(front.per_router)}, {}

    exporter = Exporter("sesemi_front", snapshot)

    @app.get("/metrics")
    def metrics() -> Response:
        return exporter.response()

    return app

