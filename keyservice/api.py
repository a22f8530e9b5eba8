"""REST API of the key service. Thin: parse, authenticate, call KeyService.

`create_app` holds what every answer shares: the reserve of threads for
callers with a credential, the follow of the log before a request, and the
signed checkpoint, proof and response signature after it; the routes live in
blueprints (keyservice/routes/), one per kind of caller."""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from sesemi import http_methods, ks_log, ks_response, signed_call
from sesemi.errors import SesemiError, UnavailableError
from sesemi.http_errors import error_body

from . import http_request as rq
from .api_state import ApiState, api
from .routes import clients, enclaves, log as log_routes, service as service_routes
from .service import KeyService
from .store import LogNodesEdited

log = logging.getLogger("sesemi.keyservice")

# The routes that check a caller's credential before any other work, so a
# forged one is refused quickly. Registration is self-signed by a key anyone
# can make, and the attestation routes check nothing: there a credential
# header is noise anyone can add, and counting it would hand the reserve to
# slow anonymous work (an attestation waiting on a PCCS).
_CHECKS_CREDENTIAL = frozenset({
    "clients.put_model", "clients.get_model", "clients.grant", "clients.revoke", "clients.request_key",
    "clients.user_status", "clients.audit", "enclaves.enclave_keys", "enclaves.enclave_request_keys",
    "enclaves.enclave_roster"})


def _credentialed() -> bool:
    """Carries a signed-call signature or an attestation token (checked later)
    on a route that checks it."""
    if request.endpoint not in _CHECKS_CREDENTIAL:
        return False
    return bool(request.headers.get(signed_call.H_SIGNATURE)) or \
        request.headers.get("Authorization", "").startswith("Bearer ")


def create_app(ks: KeyService, anonymous_slots: int | None = None) -> Flask:
    """`anonymous_slots`: how many requests without a credential may run at once
    (serve() passes its thread count less a reserve), so that slow anonymous
    work, such as attestations waiting on a PCCS, never takes the threads that
    signed calls and enclave key fetches need."""
    app = Flask("sesemi.keyservice")
    app.config["MAX_CONTENT_LENGTH"] = ks.config.max_body_bytes
    app.extensions["sesemi.keyservice"] = ApiState(ks)
    # werkzeug answers '//' and a missing trailing slash with an HTML redirect,
    # before any error handler runs: route those to the JSON 404 instead.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    _reserve(app, anonymous_slots)
    _follow_and_sign(app, ks)
    _errors(app)
    for bp in (service_routes.bp, clients.bp, enclaves.bp, log_routes.bp):
        app.register_blueprint(bp)
    if not _CHECKS_CREDENTIAL <= set(app.view_functions):  # a renamed route would leave the reserve silently
        raise RuntimeError(f"unknown routes in _CHECKS_CREDENTIAL: {sorted(_CHECKS_CREDENTIAL - set(app.view_functions))}")
    return app


def _reserve(app: Flask, anonymous_slots: int | None) -> None:
    slots = threading.BoundedSemaphore(anonymous_slots) if anonymous_slots else None

    @app.before_request
    def _take_slot() -> None:
        if slots is None or _credentialed():
            return
        if not slots.acquire(blocking=False):
            raise UnavailableError("the key service is busy with requests without a credential: retry shortly")
        g.sesemi_slot = True

    @app.teardown_request
    def _give_slot(_exc: BaseException | None) -> None:
        if g.pop("sesemi_slot", False):
            assert slots is not None
            slots.release()


def _follow_and_sign(app: Flask, ks: KeyService) -> None:
    @app.before_request
    def _bound_proofs() -> None:
        # A proof for the held size is built on any route; without a credential it
        # comes from the caller's address's proof bucket (a 429 says "retry", never
        # an answer without its proof, which a witness would read as a fork).
        if request.headers.get(ks_log.H_KNOWN) and not _credentialed():
            api().proof_limit.take(request.remote_addr or "")

    @app.before_request
    def _follow_log() -> None:
        # Every answer then reflects a log no older than the database's at the time
        # of the request (what a client that saw another replica expects); requests
        # that arrive together share one follow. A database behind what this
        # replica or a peer has seen is refused here.
        ks.store.sync_after(g.setdefault("arrived", time.monotonic()), rq.known_size(), ks.config.follow_max_age_s)

    @app.after_request
    def _label(resp: Response) -> Response:
        # The checkpoint of the head this answer reflects (a write's receipt names the
        # same one), and a consistency proof from the size the caller holds.
        head, note = ks.checkpoint_note(g.get("ks_head"))
        known = rq.known_size()
        proof_from, proof = "", ""
        if 0 < known <= head.size:
            try:
                proof_from, proof = str(known), api().proof(known, head.size)
            except LogNodesEdited as exc:  # not a fork: say what it is, signed, rather than send a bad proof
                log.error("%s", exc)
                resp = rq.json_answer(error_body(exc), exc.http_status)
        resp.headers["X-Sesemi-KS-Key"] = ks.audience
        resp.headers[ks_log.H_CHECKPOINT] = ks_log.encode_note(note)
        if proof_from:
            resp.headers[ks_log.H_PROOF_FROM] = proof_from
            resp.headers[ks_log.H_PROOF] = proof
        # Bound to the caller's nonce, so a response cannot be forged, altered or replayed.
        resp.headers[ks_response.H_SIGNATURE] = ks_response.sign(
            ks.signer, request.headers.get(ks_response.H_NONCE, ""), request.method, rq.target(),
            rq.request_body(), resp.status_code, resp.get_data(), note, proof_from, proof)
        if ks.tee.simulated:
            resp.headers["X-Sesemi-Simulation"] = "insecure-sim"
        return resp


def _errors(app: Flask) -> None:
    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        log.info("refused %s %s: %s", request.method, request.path, exc)
        return rq.json_answer(error_body(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if not http_methods.recognised(request.method):  # 501 on any path, as the action answers
            return rq.json_answer({"error": f"{request.method[:32]} is not a method this server implements",
                                   "kind": "HTTPError"}, 501)
        return rq.json_answer({"error": exc.description or exc.name, "kind": "HTTPError"}, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        # The type only: a message might quote request data.
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return rq.json_answer({"error": "internal error", "kind": "InternalError"}, 500)
