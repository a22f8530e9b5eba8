"""What the emulator's routes share: JSON answers in OpenWhisk's error shape
(common/scala/.../http/ErrorResponse.scala), query arguments with its limits,
and the Platform the app serves."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, current_app, g, request

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError
from sesemi.openwhisk import APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR, SUCCESS

from .emulator import Platform

MAX_LIST = 200  # application.conf whisk.query-limit.max-list-limit

INVOKE_STATUS = {SUCCESS: 200, APPLICATION_ERROR: 502, DEVELOPER_ERROR: 502, INTERNAL_ERROR: 500}


def json_answer(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json", headers=headers)


def tid() -> str:
    if "tid" not in g:
        g.tid = uuid.uuid4().hex
    return g.tid


def error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """ErrorResponse: the reason and the request's transaction id."""
    return json_answer({"error": message, "code": tid()}, status, headers)


def flag(name: str) -> bool:
    return request.args.get(name, "false").lower() == "true"


def int_arg(name: str, default: int, hi: int, what: str = "") -> int:
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


def epoch_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise FormatError(f"Parameter is not a valid value for epoch seconds: {raw[:40]}") from None


def platform() -> Platform:
    """The Platform this app serves (create_app puts it in app.extensions)."""
    p: Platform = current_app.extensions["sesemi.platform"]
    return p


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
