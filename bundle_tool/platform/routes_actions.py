"""OpenWhisk's action routes (core/controller/.../Actions.scala): list, get,
create or update, delete, and invoke, blocking (200 / 502 / 500 by outcome,
`?timeout=` in ms shortens the wait) or not (202)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from sesemi.errors import FormatError

from .http_common import INVOKE_STATUS, MAX_LIST, body_object, error, flag, int_arg, json_answer, platform

actions = Blueprint("actions", __name__, url_prefix="/api/v1/namespaces/<ns>/actions")


@actions.get("")
def list_actions(ns: str) -> Response:
    return json_answer(platform().list_actions(int_arg("limit", 30, MAX_LIST, "actions") or MAX_LIST,
                                               int_arg("skip", 0, 1 << 30)))


@actions.get("/<name>")
def get_action(ns: str, name: str) -> Response:
    return json_answer(platform().get_action(name))


@actions.put("/<name>")
def put_action(ns: str, name: str) -> Response:
    return json_answer(platform().put_action(name, body_object(False), flag("overwrite")))


@actions.delete("/<name>")
def delete_action(ns: str, name: str) -> Response:
    return json_answer(platform().delete_action(name))


def _wait_s() -> float:
    """How long a blocking invoke waits: the emulator's bound, or `?timeout=` ms below it."""
    bound = platform().s.blocking_wait_s
    if "timeout" not in request.args:
        return bound
    max_ms = int(bound * 1000)
    raw = request.args["timeout"]
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= max_ms):
        raise FormatError(f"Timeout must be number of milliseconds up to {max_ms}.")
    return int(raw) / 1000


@actions.post("/<name>")
def invoke(ns: str, name: str) -> Response:
    p = platform()
    if request.content_length and request.content_length > p.s.max_payload_bytes:
        return error("The request content was malformed: request entity too large "
                     f"(limit {p.s.max_payload_bytes} bytes).", 413)
    params = body_object(True)
    blocking, result_only = flag("blocking"), flag("result")
    wait_s = _wait_s()
    aid, done = p.invoke(name, params)
    header = {"x-openwhisk-activation-id": aid}
    if not blocking or not done.wait(wait_s):
        return json_answer({"activationId": aid}, 202, header)
    rec, throttled = p.record(aid)
    if throttled:  # no record exists for it
        return error(rec["error"], 429, header)
    response = rec["response"]
    status = INVOKE_STATUS[response["status"]]
    result = response.get("result")
    if isinstance(result, list):  # Actions.scala doInvoke: an array result goes out alone
        return json_answer(result, status, header)
    return json_answer((result if result is not None else {}) if result_only else rec, status, header)
