"""The log and the cluster: the signed tree head (peers, operators), public
checkpoints and consistency proofs (they reveal only hashes and sizes), and
replicas joining by attestation."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from .. import http_request as rq
from ..api_state import api

bp = Blueprint("log", __name__)


@bp.get("/v1/state")
def state() -> Response:
    # The signed checkpoint header is the answer (peers, operators).
    head = api().ks.store.head()
    g.ks_head = head
    return rq.json_answer({"size": head.size, "root": head.root.hex()})


@bp.get("/v1/log/checkpoint")
def log_checkpoint() -> Response:
    g.ks_head, note = api().ks.checkpoint_note()
    return rq.json_answer({"checkpoint": note})


@bp.get("/v1/log/consistency")
def log_consistency() -> Response:
    a = api()
    a.proof_limit.take(request.remote_addr or "")
    first = rq.count(request.args.get("first", ""), "first", 0, 1 << 62)
    second = rq.count(request.args.get("second", ""), "second", 0, 1 << 62)
    return rq.json_answer(a.ks.consistency(first, second))


@bp.post("/v1/cluster/join")
def cluster_join() -> Response:
    return rq.json_answer(api().ks.admit_replica(rq.body()))
