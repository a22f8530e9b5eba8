"""REST API of the key service. Thin: parse, authenticate, call KeyService."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from sesemi import http_methods, ks_log, ks_response, signed_call
from sesemi.encoding import JSONDecodeError, b64d, hexd, json_dumps, json_loads
from sesemi.errors import AuthError, FormatError, SesemiError, UnavailableError
from sesemi.http_errors import error_body
from sesemi.identity import check_public_key, principal_id

from .limits import RateLimiter
from .metrics import CONTENT_TYPE_LATEST
from .store import LogNodesEdited
from .service import KeyService

log = logging.getLogger("sesemi.keyservice")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json")


def _body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        return json_loads(raw)
    except JSONDecodeError:
        raise FormatError("request body is not valid JSON") from None


def _target() -> str:
    """The request target as it came on the request line (waitress and werkzeug
    both pass it as REQUEST_URI): what signatures cover."""
    return request.environ.get("REQUEST_URI") or request.full_path.rstrip("?")


def _request_body() -> bytes:
    """What the response signature binds the answer to: the body as received
    (empty when it was refused unread, e.g. for its size)."""
    try:
        return request.get_data(cache=True)
    except HTTPException:
        return b""


# The routes that check a caller's credential before any other work, so a
# forged one is refused quickly. Registration is self-signed by a key anyone
# can make, and the attestation routes check nothing: there a credential
# header is noise anyone can add, and counting it would hand the reserve to
# slow anonymous work (an attestation waiting on a PCCS).
_CHECKS_CREDENTIAL = frozenset({"put_model", "get_model", "grant", "revoke", "request_key", "user_status",
                                "audit", "enclave_keys", "enclave_request_keys", "enclave_roster"})


def _bearer() -> str:
    """The attestation token of an enclave's call."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise AuthError("missing attestation token (Authorization: Bearer ...)")
    return auth[7:].strip()


def _credentialed() -> bool:
    """Carries a signed-call signature or an attestation token (checked later)
    on a route that checks it."""
    if request.endpoint not in _CHECKS_CREDENTIAL:
        return False
    return bool(request.headers.get(signed_call.H_SIGNATURE)) or \
        request.headers.get("Authorization", "").startswith("Bearer ")


def _count(text: str, what: str, low: int, high: int) -> int:
    # isascii: str.isdigit() also holds for digits int() refuses ("²") or reads ("١")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not low <= int(text) <= high:
        raise FormatError(f"{what}: expected a whole number from {low} to {high}")
    return int(text)


def create_app(ks: KeyService, anonymous_slots: int | None = None) -> Flask:
    """`anonymous_slots`: how many requests without a credential may run at once
    (serve() passes its thread count less a reserve), so that slow anonymous
    work, such as attestations waiting on a PCCS, never takes the threads that
    signed calls and enclave key fetches need."""
    app = Flask("sesemi.keyservice")
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

    app.config["MAX_CONTENT_LENGTH"] = ks.config.max_body_bytes
    # Anonymous writes and proof requests, per client address (docs/keyservice.md, "Bounds").
    nonce_limit = RateLimiter("attestation nonces", *ks.config.nonces_per_address)
    registration_limit = RateLimiter("registrations", *ks.config.registrations_per_address)
    proof_limit = RateLimiter("log proof requests", *ks.config.proofs_per_address)
    # Each signed call appends a leaf (its sequence number): a principal may not grow
    # the log at hundreds of entries a second for ever (docs/keyservice.md, "Bounds").
    call_limit = RateLimiter("signed calls from this principal", *ks.config.calls_per_principal,
                             max_addresses=ks.config.max_tracked_principals)

    # Writes append leaves whoever signs them: an address's self-registered
    # principals share one bucket for writes (docs/keyservice.md, "Bounds").
    write_limit = RateLimiter("signed writes from this address", *ks.config.writes_per_address)

    def claim(pid: str, seq: int) -> None:
        call_limit.take(pid)  # after the signature verified: only a key holder spends its bucket
        if request.method == "GET":
            return  # a read changes nothing: no sequence number to claim, no leaf (its answer is bound to its nonce)
        write_limit.take(request.remote_addr or "")
        ks.claim_call_seq(pid, seq)
    # werkzeug answers '//' and a missing trailing slash with an HTML redirect,
    # before any error handler runs: route those to the JSON 404 instead.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    def signed_target() -> str:
        """The target exactly as sent, in the one canonical form, and the same one
        the routes see (nothing was decoded on the way)."""
        target = signed_call.check_target(_target())
        parsed = request.path + ("?" + request.query_string.decode("latin-1") if request.query_string else "")
        if parsed != target:
            raise FormatError("request target is not in canonical form")
        return target

    def authenticate(public_key_of: Callable[[str], bytes | None] = ks.public_key_of) -> str:
        target = signed_target()
        return signed_call.verify(
            request.headers, request.method, target, ks.audience, request.get_data(cache=True),
            ks.clock(), public_key_of, claim,
        ).principal_id

    @app.before_request
    def _bound_proofs() -> None:
        # A proof for the held size is built on any route; without a credential it
        # comes from the caller's address's proof bucket (a 429 says "retry", never
        # an answer without its proof, which a witness would read as a fork).
        if request.headers.get(ks_log.H_KNOWN) and not _credentialed():
            proof_limit.take(request.remote_addr or "")

    @app.before_request
    def _follow_ledger() -> None:
        # Every answer then reflects a log no older than the database's at the time
        # of the request (what a client that saw another replica expects); requests
        # that arrive together share one follow. A database behind what this
        # replica or a peer has seen is refused here.
        known = request.headers.get(ks_log.H_KNOWN, "")
        ks.store.sync_after(g.setdefault("arrived", time.monotonic()),
                            int(known) if known.isascii() and known.isdigit() and len(known) <= 19 else 0,
                            ks.config.follow_max_age_s)

    @app.after_request
    def _label(resp: Response) -> Response:
        # The checkpoint of the head this answer reflects (a write's receipt names the
        # same one), and a consistency proof from the size the caller holds.
        head, note = ks.checkpoint_note(g.get("ks_head"))
        try:
            proof_from, proof = _proof_for(head)
        except LogNodesEdited as exc:  # not a fork: say what it is, signed, rather than send a bad proof
            log.error("%s", exc)
            resp = _json(error_body(exc), exc.http_status)
            proof_from, proof = "", ""
        resp.headers["X-Sesemi-KS-Key"] = ks.audience
        resp.headers[ks_log.H_CHECKPOINT] = ks_log.encode_note(note)
        if proof_from:
            resp.headers[ks_log.H_PROOF_FROM] = proof_from
            resp.headers[ks_log.H_PROOF] = proof
        # Bound to the caller's nonce, so a response cannot be forged, altered or replayed.
        resp.headers[ks_response.H_SIGNATURE] = ks_response.sign(
            ks.signer, request.headers.get(ks_response.H_NONCE, ""), request.method, _target(),
            _request_body(), resp.status_code, resp.get_data(), note, proof_from, proof)
        if ks.tee.simulated:
            resp.headers["X-Sesemi-Simulation"] = "insecure-sim"
        return resp

    proofs: OrderedDict[tuple[int, int], str] = OrderedDict()
    proofs_lock = threading.Lock()

    def _cached_proof(first: int, second: int) -> str:
        """Witnesses near the head ask for the same few proofs: each is built once."""
        with proofs_lock:
            hit = proofs.get((first, second))
        if hit is None:
            hit = ks_log.encode_proof(ks.store.consistency_proof(first, second))
            with proofs_lock:
                proofs[(first, second)] = hit
                while len(proofs) > 1024:
                    proofs.popitem(last=False)
        return hit

    def _proof_for(head) -> tuple[str, str]:
        """('', '') when the caller holds no size, or one this log cannot extend (it
        then refuses the answer itself, naming both checkpoints)."""
        known = request.headers.get(ks_log.H_KNOWN, "")
        if not (known.isascii() and known.isdigit()) or len(known) > 19 or not 0 < int(known) <= head.size:
            return "", ""
        return known, _cached_proof(int(known), head.size)

    @app.errorhandler(SesemiError)
    def _sesemi_error(exc: SesemiError) -> Response:
        log.info("refused %s %s: %s", request.method, request.path, exc)
        return _json(error_body(exc), exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if not http_methods.recognised(request.method):  # 501 on any path, as the action answers
            return _json({"error": f"{request.method[:32]} is not a method this server implements",
                          "kind": "HTTPError"}, 501)
        return _json({"error": exc.description or exc.name, "kind": "HTTPError"}, exc.code or 400)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        # The type only: a message might quote request data.
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return _json({"error": "internal error", "kind": "InternalError"}, 500)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"ok": True, "tee": ks.tee.name, "insecure_simulation": ks.tee.simulated,
                      "accepts_sim_evidence": ks.config.insecure_sim_attestation,
                      "accepts_dcap_evidence": ks.verifier.accepts_dcap})

    @app.get("/metrics")
    def metrics() -> Response:
        # Counts only, labels from the code (keyservice/metrics.py); docs/keyservice.md.
        return Response(ks.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/attestation")
    def attestation() -> Response:
        nonce = hexd(request.args.get("nonce", ""), "nonce")
        return _json(ks.self_attestation(nonce))

    @app.post("/v1/principals")
    def register() -> Response:
        registration_limit.take(request.remote_addr or "")
        body = _body()
        pub = b64d(body.get("public_key") if isinstance(body, dict) else None, "public_key")
        pid = principal_id(check_public_key(pub))
        if request.headers.get(signed_call.H_PRINCIPAL, pid) != pid:
            raise AuthError("X-Sesemi-Principal is not the id of the key being registered")
        # Proof of possession: the call is signed by the key being registered, and
        # the signed message names its id.
        authenticate(lambda claimed: pub if claimed == pid else None)
        return _json({"principal_id": ks.register_principal(pub)})

    @app.put("/v1/models/<model_id>")
    def put_model(model_id: str) -> Response:
        answer = ks.put_model(authenticate(), model_id, _body())
        g.ks_head = answer.pop("_head")  # the receipt's checkpoint is the answer's
        return _json(answer)

    @app.get("/v1/models/<model_id>")
    def get_model(model_id: str) -> Response:
        return _json(ks.get_model(authenticate(), model_id))

    @app.put("/v1/models/<model_id>/grants/<user_id>")
    def grant(model_id: str, user_id: str) -> Response:
        g.ks_head, receipt = ks.grant(authenticate(), model_id, user_id)
        return _json({"model_id": model_id, "user_id": user_id, "granted": True, "receipt": receipt})

    @app.delete("/v1/models/<model_id>/grants/<user_id>")
    def revoke(model_id: str, user_id: str) -> Response:
        g.ks_head, receipt = ks.revoke(authenticate(), model_id, user_id)
        return _json({"model_id": model_id, "user_id": user_id, "granted": False, "receipt": receipt})

    @app.put("/v1/models/<model_id>/request-key")
    def request_key(model_id: str) -> Response:
        version, g.ks_head, receipt = ks.put_request_key(authenticate(), model_id, _body())
        return _json({"model_id": model_id, "enrolled": True, "version": version, "receipt": receipt})

    @app.get("/v1/users/<user_id>/status")
    def user_status(user_id: str) -> Response:
        return _json(ks.user_status(authenticate(), user_id))

    @app.get("/v1/audit")
    def audit() -> Response:
        verify = request.args.get("verify", "0")
        if verify not in ("0", "1"):
            raise FormatError("verify: expected 0 or 1")
        # With proofs an entry costs ~20 hashes and ~1 KiB: fewer per answer (page with `before`).
        limit = _count(request.args.get("limit", "100"), "limit", 1, 200 if verify == "1" else 1000)
        before = request.args.get("before")
        answer = ks.audit_answer(authenticate(), request.args.get("model_id"), verify == "1", limit,
                                 None if before is None else _count(before, "before", 0, 1 << 62))
        g.ks_head = answer.pop("_head")  # the head in the body is the one the checkpoint signs
        return _json(answer)

    @app.get("/v1/state")
    def state() -> Response:
        # The signed checkpoint header is the answer (peers, operators).
        head = ks.store.head()
        g.ks_head = head
        return _json({"size": head.size, "root": head.root.hex()})

    # Anyone may read checkpoints and proofs: they reveal only hashes and sizes.
    @app.get("/v1/log/checkpoint")
    def log_checkpoint() -> Response:
        g.ks_head, note = ks.checkpoint_note()
        return _json({"checkpoint": note})

    @app.get("/v1/log/consistency")
    def log_consistency() -> Response:
        proof_limit.take(request.remote_addr or "")
        first = _count(request.args.get("first", ""), "first", 0, 1 << 62)
        second = _count(request.args.get("second", ""), "second", 0, 1 << 62)
        return _json(ks.consistency(first, second))

    @app.post("/v1/cluster/join")
    def cluster_join() -> Response:
        return _json(ks.admit_replica(_body()))

    @app.post("/v1/enclave/nonce")
    def enclave_nonce() -> Response:
        nonce_limit.take(request.remote_addr or "")
        return _json(ks.new_enclave_nonce())

    @app.post("/v1/enclave/attest")
    def enclave_attest() -> Response:
        return _json(ks.attest_enclave(_body()))

    @app.post("/v1/enclave/request-keys")
    def enclave_request_keys() -> Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise AuthError("missing attestation token (Authorization: Bearer ...)")
        return _json(ks.release_request_keys(auth[7:].strip(), _body()))

    @app.post("/v1/enclave/keys")
    def enclave_keys() -> Response:
        return _json(ks.release_keys(_bearer(), _body()))

    @app.post("/v1/enclave/roster")
    def enclave_roster() -> Response:
        return _json(ks.enclave_roster(_bearer(), _body()))

    if not _CHECKS_CREDENTIAL <= set(app.view_functions):  # a renamed route would leave the reserve silently
        raise RuntimeError(f"unknown routes in _CHECKS_CREDENTIAL: {sorted(_CHECKS_CREDENTIAL - set(app.view_functions))}")
    return app
