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
from typing import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sesemi.errors import SesemiError

from .emulator import Platform
from .http_common import error
from .routes_actions import actions
from .routes_activations import activations
from .routes_service import service

log = logging.getLogger("sesemi.platform")


def create_app(platform: Platform, auth: str) -> Flask:
    """The emulator's Flask app: basic auth on everything but /ping, errors in
    OpenWhisk's shape, and the routes' blueprints."""
    app = Flask("sesemi.platform")
    app.config["MAX_CONTENT_LENGTH"] = platform.s.max_payload_bytes + (1 << 16)
    app.extensions["sesemi.platform"] = platform
    app.before_request(_auth_check(auth, platform.s.namespace))
    _register_errors(app, platform.s.max_payload_bytes)
    for blueprint in (service, actions, activations):
        app.register_blueprint(blueprint)
    return app


def _auth_check(auth: str, namespace: str) -> Callable[[], Response | None]:
    user, _, password = auth.partition(":")

    def authorised() -> bool:
        a = request.authorization
        if a is None or a.type != "basic":
            return False
        return (hmac.compare_digest((a.username or "").encode(), user.encode())
                and hmac.compare_digest((a.password or "").encode(), password.encode()))

    def check() -> Response | None:
        if request.path == "/ping":
            return None
        if not authorised():
            return error("The supplied authentication is invalid.", 401, {"WWW-Authenticate": 'Basic realm="openwhisk"'})
        ns = (request.view_args or {}).get("ns")
        if ns is not None and ns not in ("_", namespace):
            return error(f"The supplied authentication is not authorized to access '{ns}'.", 403)
        return None

    return check


def _register_errors(app: Flask, max_payload_bytes: int) -> None:
    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        return error(str(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return error("The request content was malformed: request entity too large "
                         f"(limit {max_payload_bytes} bytes).", 413)
        if exc.code == 404:
            return error("The requested resource does not exist.", 404)
        return error(exc.description or exc.name, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return error("internal error in the emulator", 500)
