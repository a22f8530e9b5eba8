"""The OpenWhisk action protocol over HTTP: POST /init once, POST /run per
activation. One process, threads (Occlum cannot fork)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError, SesemiError, UnavailableError
from sesemi.http_errors import error_body

from .config import ActionConfig
from .runtime import Runtime

log = logging.getLogger("sesemi.action")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json")


class _State:
    def __init__(self, defaults: ActionConfig) -> None:
        self.defaults = defaults
        self.runtime: Runtime | None = None
        self.lock = threading.Lock()
        self.init_attempted = False


def create_app(defaults: ActionConfig, max_body_bytes: int = 64 << 20) -> Flask:
    app = Flask("sesemi.action")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    state = _State(defaults)
    app.extensions["sesemi_state"] = state

    def body_value() -> Any:
        try:
            body = json_loads(request.get_data())
        except JSONDecodeError:
            raise FormatError("body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("value", {}), dict):
            raise FormatError("body must be a JSON object with an object 'value'")
        return body.get("value", {})

    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        log.info("%s refused: %s (%s)", request.path, type(exc).__name__, exc)
        return _json(error_body(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _json({"error": exc.description or exc.name}, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.error("internal error on %s: %s", request.path, type(exc).__name__)
        return _json({"error": "internal error in the action"}, 500)

    @app.post("/init")
    def init() -> Response:
        value = body_value()
        with state.lock:
            if state.init_attempted:
                return _json({"error": "Cannot initialize the action more than once."}, 403)
            state.init_attempted = True
            env = value.get("env") or {}
            if not isinstance(env, dict):
                raise FormatError("value.env must be an object")
            state.runtime = Runtime(state.defaults.with_env(env))
        return _json({"ok": True, "mrenclave": state.runtime.mrenclave, **state.runtime.labels})

    @app.post("/run")
    def run() -> Response:
        rt = state.runtime
        if rt is None:
            raise UnavailableError("action is not initialised (POST /init first)")
        return _json(rt.run(body_value()))

    @app.get("/stats")
    def stats() -> Response:
        rt = state.runtime
        return _json(rt.stats() if rt else {"initialised": False})

    return app


def initialise(app: Flask, env: dict[str, str] | None = None) -> Runtime:
    """Initialise in-process, as if /init had been posted (for direct use without a platform)."""
    state: _State = app.extensions["sesemi_state"]
    with state.lock:
        state.init_attempted = True
        state.runtime = Runtime(state.defaults.with_env(env or {}))
        return state.runtime
