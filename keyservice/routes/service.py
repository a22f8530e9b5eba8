"""The service's own routes: health, Prometheus metrics (counts only, labels
from the code: keyservice/metrics.py), and its attestation to a nonce."""

from __future__ import annotations

from flask import Blueprint, Response, request

from sesemi.encoding import hexd

from .. import http_request as rq
from ..api_state import api
from ..metrics import CONTENT_TYPE_LATEST

bp = Blueprint("service", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    ks = api().ks
    return rq.json_answer({"ok": True, "tee": ks.tee.name, "insecure_simulation": ks.tee.simulated,
                           "accepts_sim_evidence": ks.config.insecure_sim_attestation,
                           "accepts_dcap_evidence": ks.verifier.accepts_dcap})


@bp.get("/metrics")
def metrics() -> Response:
    return Response(api().ks.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/v1/attestation")
def attestation() -> Response:
    nonce = hexd(request.args.get("nonce", ""), "nonce")
    return rq.json_answer(api().ks.self_attestation(nonce))
