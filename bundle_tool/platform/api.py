"""The emulator's HTTP surface: OpenWhisk's REST API subset (actions and
activations under /api/v1/namespaces/{ns}/...), HTTP basic auth, plus
`GET /ping` and `GET /emulator/containers` (not OpenWhisk: for tests and
operators, it lists the running containers)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError, SesemiError
from sesemi.openwhisk import APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR, SUCCESS

from .emulator import Platform

log = logging.getLogger("sesemi.platform")

_INVOKE_STATUS = {SUCCESS: 200, APPLICATION_ERROR: 502, DEVELOPER_ERROR: 502, INTERNAL_ERROR: 500}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json", headers=headers)


def _flag(name: str) -> bool:
    return request.args.get(name, "false").lower() == "true"


def _int_arg(name: str, default: int, hi: int) -> int:
    try:
        v = int(request.args.get(name, default))
    except ValueError:
        raise FormatError(f"query parameter {name} must be an integer") from None
    return max(0, min(v, hi))


def create_app(platform: Platform, auth: str) -> Flask:
    app = Flask("sesemi.platform")
    app.config["MAX_CONTENT_LENGTH"] = platform.s.max_payload_bytes + (1 << 16)
    user, _, password = auth.partition(":")
    namespace = platform.s.namespace

    def authorised() -> bool:
        a = request.authorization
        if a is None or a.type != "basic":
            return False
        return (hmac.compare_digest((a.username or "").encode(), user.encode())
                and hmac.compare_digest((a.password or "").encode(), password.encode()))

    @app.before_request
    def _check_auth() -> Response | None:
        if request.path == "/ping":
            return None
        if not authorised():
            return _json({"error": "The supplied authentication is invalid."}, 401,
                         {"WWW-Authenticate": 'Basic realm="openwhisk"'})
        ns = (request.view_args or {}).get("ns")
        if ns is not None and ns not in ("_", namespace):
            return _json({"error": f"The supplied authentication is not authorized to access '{ns}'."}, 403)
        return None

    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        return _json({"error": str(exc)}, exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return _json({"error": "The request content was malformed: request entity too large "
                                   f"(limit {platform.s.max_payload_bytes} bytes)."}, 413)
        return _json({"error": exc.description or exc.name}, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return _json({"error": "internal error in the emulator"}, 500)

    def body_object(optional: bool) -> dict[str, Any]:
        raw = request.get_data()
        if not raw and optional:
            return {}
        try:
            obj = json_loads(raw)
        except JSONDecodeError:
            raise FormatError("The request content was malformed: not valid JSON.") from None
        if not isinstance(obj, dict):
            raise FormatError("The request content was malformed: expected a JSON object.")
        return obj

    @app.get("/ping")
    def ping() -> Response:
        return _json("pong")

    @app.get("/api/v1/namespaces")
    def namespaces() -> Response:
        return _json([namespace])

    @app.get("/api/v1/namespaces/<ns>/actions")
    def list_actions(ns: str) -> Response:
        return _json(platform.list_actions(_int_arg("limit", 30, 200) or 200, _int_arg("skip", 0, 1 << 30)))

    @app.get("/api/v1/namespaces/<ns>/actions/<name>")
    def get_action(ns: str, name: str) -> Response:
        return _json(platform.get_action(name))

    @app.put("/api/v1/namespaces/<ns>/actions/<name>")
    def put_action(ns: str, name: str) -> Response:
        return _json(platform.put_action(name, body_object(False), _flag("overwrite")))

    @app.delete("/api/v1/namespaces/<ns>/actions/<name>")
    def delete_action(ns: str, name: str) -> Response:
        return _json(platform.delete_action(name))

    @app.post("/api/v1/namespaces/<ns>/actions/<name>")
    def invoke(ns: str, name: str) -> Response:
        if request.content_length and request.content_length > platform.s.max_payload_bytes:
            return _json({"error": "The request content was malformed: request entity too large "
                                   f"(limit {platform.s.max_payload_bytes} bytes)."}, 413)
        params = body_object(True)
        blocking, result_only = _flag("blocking"), _flag("result")
        aid, done = platform.invoke(name, params)
        if not blocking or not done.wait(platform.s.blocking_wait_s):
            return _json({"activationId": aid}, 202)
        rec, throttled = platform.record(aid)
        if throttled:
            return _json({"error": rec["response"]["result"]["error"], "code": aid}, 429)
        status = _INVOKE_STATUS[rec["response"]["status"]]
        return _json(rec["response"]["result"] if result_only else rec, status)

    @app.get("/api/v1/namespaces/<ns>/activations")
    def list_activations(ns: str) -> Response:
        return _json(platform.list_records(request.args.get("name"), _int_arg("limit", 30, 200) or 200,
                                           _int_arg("skip", 0, 1 << 30)))

    @app.get("/api/v1/namespaces/<ns>/activations/<aid>")
    def get_activation(ns: str, aid: str) -> Response:
        return _json(platform.record(aid)[0])

    @app.get("/api/v1/namespaces/<ns>/activations/<aid>/result")
    def get_result(ns: str, aid: str) -> Response:
        return _json(platform.record(aid)[0]["response"])

    @app.get("/emulator/containers")
    def containers() -> Response:
        return _json(platform.containers())

    return app
