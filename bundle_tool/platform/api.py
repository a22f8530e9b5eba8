"""The emulator's HTTP surface: OpenWhisk's REST API subset (actions and
activations under /api/v1/namespaces/{ns}/...), HTTP basic auth, plus
`GET /ping` and `GET /emulator/containers` (not OpenWhisk: for tests and
operators, it lists the running containers).

Shapes from apache/openwhisk: error bodies `{"error", "code"}` with the
request's transaction id (common/scala/.../http/ErrorResponse.scala); a
blocking invoke answers 200 / 502 / 500 by outcome and sends
x-openwhisk-activation-id, `?timeout=` in ms shortens the wait
(core/controller/.../Actions.scala); list limits 0..200
(application.conf query-limit, RestApiCommons); activation lists take docs,
since, upto (core/controller/.../Activations.scala)."""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError, NotFound, SesemiError
from sesemi.openwhisk import APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR, SUCCESS

from .emulator import Platform

_MAX_LIST = 200  # application.conf whisk.query-limit.max-list-limit

log = logging.getLogger("sesemi.platform")

_INVOKE_STATUS = {SUCCESS: 200, APPLICATION_ERROR: 502, DEVELOPER_ERROR: 502, INTERNAL_ERROR: 500}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json", headers=headers)


def _tid() -> str:
    if "tid" not in g:
        g.tid = uuid.uuid4().hex
    return g.tid


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """ErrorResponse: the reason and the request's transaction id."""
    return _json({"error": message, "code": _tid()}, status, headers)


def _flag(name: str) -> bool:
    return request.args.get(name, "false").lower() == "true"


def _int_arg(name: str, default: int, hi: int, what: str = "") -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise FormatError(f"The value '{raw[:40]}' is not an integer for {name}.") from None
    if not 0 <= v <= hi:
        raise FormatError(f"The value '{v}' is not in the range of 0 to {hi} for {what or name}.")
    return v


def _epoch_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise FormatError(f"Parameter is not a valid value for epoch seconds: {raw[:40]}") from None


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
            return _error("The supplied authentication is invalid.", 401,
                          {"WWW-Authenticate": 'Basic realm="openwhisk"'})
        ns = (request.view_args or {}).get("ns")
        if ns is not None and ns not in ("_", namespace):
            return _error(f"The supplied authentication is not authorized to access '{ns}'.", 403)
        return None

    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        return _error(str(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return _error("The request content was malformed: request entity too large "
                          f"(limit {platform.s.max_payload_bytes} bytes).", 413)
        if exc.code == 404:
            return _error("The requested resource does not exist.", 404)
        return _error(exc.description or exc.name, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return _error("internal error in the emulator", 500)

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
        return _json(platform.list_actions(_int_arg("limit", 30, _MAX_LIST, "actions") or _MAX_LIST,
                                           _int_arg("skip", 0, 1 << 30)))

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
            return _error("The request content was malformed: request entity too large "
                          f"(limit {platform.s.max_payload_bytes} bytes).", 413)
        params = body_object(True)
        blocking, result_only = _flag("blocking"), _flag("result")
        wait_s = platform.s.blocking_wait_s
        if "timeout" in request.args:
            max_ms = int(platform.s.blocking_wait_s * 1000)
            raw = request.args["timeout"]
            if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= max_ms):
                raise FormatError(f"Timeout must be number of milliseconds up to {max_ms}.")
            wait_s = int(raw) / 1000
        aid, done = platform.invoke(name, params)
        header = {"x-openwhisk-activation-id": aid}
        if not blocking or not done.wait(wait_s):
            return _json({"activationId": aid}, 202, header)
        rec, throttled = platform.record(aid)
        if throttled:  # no record exists for it
            return _error(rec["error"], 429, header)
        response = rec["response"]
        status = _INVOKE_STATUS[response["status"]]
        result = response.get("result")
        if isinstance(result, list):  # Actions.scala doInvoke: an array result goes out alone
            return _json(result, status, header)
        return _json((result if result is not None else {}) if result_only else rec, status, header)

    @app.get("/api/v1/namespaces/<ns>/activations")
    def list_activations(ns: str) -> Response:
        return _json(platform.list_records(request.args.get("name"),
                                           _int_arg("limit", 30, _MAX_LIST, "activations") or _MAX_LIST,
                                           _int_arg("skip", 0, 1 << 30), _flag("docs"),
                                           _epoch_arg("since"), _epoch_arg("upto")))

    def _record(aid: str) -> dict[str, Any]:
        rec, throttled = platform.record(aid)
        if throttled:
            raise NotFound("The requested resource does not exist.")
        return rec

    @app.get("/api/v1/namespaces/<ns>/activations/<aid>")
    def get_activation(ns: str, aid: str) -> Response:
        return _json(_record(aid))

    @app.get("/api/v1/namespaces/<ns>/activations/<aid>/result")
    def get_result(ns: str, aid: str) -> Response:
        return _json(_record(aid)["response"])

    @app.get("/api/v1/namespaces/<ns>/activations/<aid>/logs")
    def get_logs(ns: str, aid: str) -> Response:
        return _json({"logs": _record(aid)["logs"]})

    @app.get("/emulator/containers")
    def containers() -> Response:
        return _json(platform.containers())

    return app
