"""Enclaves: attestation (RCAR: nonce, evidence, token) and key releases, one
user's or a batch's, and a model's roster."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .. import http_request as rq
from ..api_state import api

bp = Blueprint("enclaves", __name__)


@bp.post("/v1/enclave/nonce")
def enclave_nonce() -> Response:
    a = api()
    a.nonce_limit.take(request.remote_addr or "")
    return rq.json_answer(a.ks.new_enclave_nonce())


@bp.post("/v1/enclave/attest")
def enclave_attest() -> Response:
    return rq.json_answer(api().ks.attest_enclave(rq.body()))


@bp.post("/v1/enclave/keys")
def enclave_keys() -> Response:
    return rq.json_answer(api().ks.release_keys(rq.bearer(), rq.body()))


@bp.post("/v1/enclave/request-keys")
def enclave_request_keys() -> Response:
    return rq.json_answer(api().ks.release_request_keys(rq.bearer(), rq.body()))


@bp.post("/v1/enclave/roster")
def enclave_roster() -> Response:
    return rq.json_answer(api().ks.enclave_roster(rq.bearer(), rq.body()))
