"""The router's HTTP surface. `POST /run` and `POST /v1/infer` take exactly what
the SDK's ActionClient posts to an action, `{"value": envelope}`, and answer
what the action answered, so `sesemi infer --action ROUTER_URL --path /v1/infer`
works unchanged. `GET /healthz`, `GET /stats` (counters, claims, queues)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError, SesemiError
from sesemi.http_errors import error_body

from .metrics import Exporter
from .service import Router

log = logging.getLogger("sesemi.router")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json", headers=headers)


def json_app(name: str, max_body_bytes: int, what: str) -> Flask:
    """A Flask app whose every error, its own and werkzeug's, is a JSON body with a reason."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # werkzeug answers '//' and a missing trailing slash with an HTML redirect,
    # before any error handler runs: route those to the JSON 404 instead.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        return json_response(error_body(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return json_response({"error": f"request body over {max_body_bytes} bytes", "kind": "FormatError"}, 413)
        return json_response({"error": exc.description or exc.name}, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.error("internal error in %s on %s: %s", what, request.path, type(exc).__name__)
        return json_response({"error": f"internal error in {what}", "kind": "UnavailableError"}, 500)

    return app


def create_app(router: Router) -> Flask:
    app = json_app("sesemi.router", router.cfg.max_body_bytes, "the router")

    def infer() -> Response:
        try:
            body = json_loads(request.get_data())
        except JSONDecodeError:
            raise FormatError("body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("value"), dict):
            raise FormatError("body must be {\"value\": envelope}")
        reply = router.infer(body["value"])
        return json_response(reply.body, reply.status, reply.headers)

    app.add_url_rule("/run", "run", infer, methods=["POST"])
    app.add_url_rule("/v1/infer", "infer", infer, methods=["POST"])

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"ok": True, "packs": len(router.pools), "policy": router.cfg.policy_kind,
                      "models": len(router.pack_of), "models_sha256": router.cfg.models_digest()})

    @app.get("/stats")
    def stats() -> Response:
        return json_response(router.stats())

    def snapshot():
        st = router.stats()
        return st["counters"], {}, {"pack:queued_requests": {n: p["queued"] for n, p in st["packs"].items()}}

    exporter = Exporter("sesemi_router", snapshot)

    @app.get("/metrics")
    def metrics() -> Response:
        return exporter.response()

    return app
