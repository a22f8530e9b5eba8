"""OpenWhisk's activation routes (core/controller/.../Activations.scala):
list (docs, since, upto; limits 0..200), get, result and logs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from sesemi.errors import NotFound

from .http_common import MAX_LIST, epoch_arg, flag, int_arg, json_answer, platform

activations = Blueprint("activations", __name__, url_prefix="/api/v1/namespaces/<ns>/activations")


@activations.get("")
def list_activations(ns: str) -> Response:
    return json_answer(platform().list_records(request.args.get("name"),
                                               int_arg("limit", 30, MAX_LIST, "activations") or MAX_LIST,
                                               int_arg("skip", 0, 1 << 30), flag("docs"),
                                               epoch_arg("since"), epoch_arg("upto")))


def _record(aid: str) -> dict[str, Any]:
    rec, throttled = platform().record(aid)
    if throttled:
        raise NotFound("The requested resource does not exist.")
    return rec


@activations.get("/<aid>")
def get_activation(ns: str, aid: str) -> Response:
    return json_answer(_record(aid))


@activations.get("/<aid>/result")
def get_result(ns: str, aid: str) -> Response:
    return json_answer(_record(aid)["response"])


@activations.get("/<aid>/logs")
def get_logs(ns: str, aid: str) -> Response:
    return json_answer({"logs": _record(aid)["logs"]})
