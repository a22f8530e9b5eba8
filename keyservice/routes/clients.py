"""Owners' and users' signed calls: registration, models, grants, request keys,
their standing and their audit entries. A write's answer names the checkpoint
its receipt is proved against (`g.ks_head`)."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from sesemi import signed_call
from sesemi.encoding import b64d
from sesemi.errors import AuthError, FormatError
from sesemi.identity import check_public_key, principal_id

from .. import http_request as rq
from ..api_state import api

bp = Blueprint("clients", __name__)


@bp.post("/v1/principals")
def register() -> Response:
    a = api()
    a.registration_limit.take(request.remote_addr or "")
    body = rq.body()
    pub = b64d(body.get("public_key") if isinstance(body, dict) else None, "public_key")
    pid = principal_id(check_public_key(pub))
    if request.headers.get(signed_call.H_PRINCIPAL, pid) != pid:
        raise AuthError("X-Sesemi-Principal is not the id of the key being registered")
    # Proof of possession: the call is signed by the key being registered, and
    # the signed message names its id.
    a.authenticate(lambda claimed: pub if claimed == pid else None)
    return rq.json_answer({"principal_id": a.ks.register_principal(pub)})


@bp.put("/v1/models/<model_id>")
def put_model(model_id: str) -> Response:
    a = api()
    answer = a.ks.put_model(a.authenticate(), model_id, rq.body())
    g.ks_head = answer.pop("_head")  # the receipt's checkpoint is the answer's
    return rq.json_answer(answer)


@bp.get("/v1/models/<model_id>")
def get_model(model_id: str) -> Response:
    a = api()
    return rq.json_answer(a.ks.get_model(a.authenticate(), model_id))


@bp.put("/v1/models/<model_id>/grants/<user_id>")
def grant(model_id: str, user_id: str) -> Response:
    a = api()
    g.ks_head, receipt = a.ks.grant(a.authenticate(), model_id, user_id)
    return rq.json_answer({"model_id": model_id, "user_id": user_id, "granted": True, "receipt": receipt})


@bp.delete("/v1/models/<model_id>/grants/<user_id>")
def revoke(model_id: str, user_id: str) -> Response:
    a = api()
    g.ks_head, receipt = a.ks.revoke(a.authenticate(), model_id, user_id)
    return rq.json_answer({"model_id": model_id, "user_id": user_id, "granted": False, "receipt": receipt})


@bp.put("/v1/models/<model_id>/request-key")
def request_key(model_id: str) -> Response:
    a = api()
    version, g.ks_head, receipt = a.ks.put_request_key(a.authenticate(), model_id, rq.body())
    return rq.json_answer({"model_id": model_id, "enrolled": True, "version": version, "receipt": receipt})


@bp.get("/v1/users/<user_id>/status")
def user_status(user_id: str) -> Response:
    a = api()
    return rq.json_answer(a.ks.user_status(a.authenticate(), user_id))


@bp.get("/v1/audit")
def audit() -> Response:
    a = api()
    verify = request.args.get("verify", "0")
    if verify not in ("0", "1"):
        raise FormatError("verify: expected 0 or 1")
    # With proofs an entry costs ~20 hashes and ~1 KiB: fewer per answer (page with `before`).
    limit = rq.count(request.args.get("limit", "100"), "limit", 1, 200 if verify == "1" else 1000)
    before = request.args.get("before")
    answer = a.ks.audit_answer(a.authenticate(), request.args.get("model_id"), verify == "1", limit,
                               None if before is None else rq.count(before, "before", 0, 1 << 62))
    g.ks_head = answer.pop("_head")  # the head in the body is the one the checkpoint signs
    return rq.json_answer(answer)
