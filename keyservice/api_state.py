"""What the key service's routes share for one app: the service, the per-caller
bounds (docs/keyservice.md, "Bounds"), signed-call authentication, and the
proofs built for held tree sizes. Kept in `app.extensions`, read by the
blueprints through `api()`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Mapping, cast

from flask import current_app, request

from sesemi import ks_log, signed_call
from sesemi.errors import FormatError

from . import http_request as rq
from .limits import RateLimiter
from .service import KeyService


class ApiState:
    def __init__(self, ks: KeyService) -> None:
        self.ks = ks
        cfg = ks.config
        # Anonymous writes and proof requests, per client address.
        self.nonce_limit = RateLimiter("attestation nonces", *cfg.nonces_per_address)
        self.registration_limit = RateLimiter("registrations", *cfg.registrations_per_address)
        self.proof_limit = RateLimiter("log proof requests", *cfg.proofs_per_address)
        # Each signed write appends leaves (its sequence number, its row): neither a
        # principal nor an address's self-registered principals may grow the log
        # at hundreds of entries a second for ever.
        self.call_limit = RateLimiter("signed calls from this principal", *cfg.calls_per_principal,
                                      max_addresses=cfg.max_tracked_principals)
        self.write_limit = RateLimiter("signed writes from this address", *cfg.writes_per_address)
        self._proofs: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._proofs_lock = threading.Lock()

    def _claim(self, pid: str, seq: int) -> None:
        self.call_limit.take(pid)  # after the signature verified: only a key holder spends its bucket
        if request.method == "GET":
            return  # a read changes nothing: no sequence number to claim, no leaf (its answer is bound to its nonce)
        self.write_limit.take(request.remote_addr or "")
        self.ks.claim_call_seq(pid, seq)

    def authenticate(self, public_key_of: Callable[[str], bytes | None] | None = None) -> str:
        """The signed call's principal id (docs/protocol.md, "Identities and signed calls")."""
        target = signed_call.check_target(rq.target())
        parsed = request.path + ("?" + request.query_string.decode("latin-1") if request.query_string else "")
        if parsed != target:  # the target exactly as sent, and the same one the routes see
            raise FormatError("request target is not in canonical form")
        return signed_call.verify(
            cast(Mapping[str, str], request.headers), request.method, target, self.ks.audience, request.get_data(cache=True),
            self.ks.clock(), public_key_of or self.ks.public_key_of, self._claim,
        ).principal_id

    def proof(self, first: int, second: int) -> str:
        """Witnesses near the head ask for the same few proofs: each is built once."""
        with self._proofs_lock:
            hit = self._proofs.get((first, second))
        if hit is None:
            hit = ks_log.encode_proof(self.ks.store.consistency_proof(first, second))
            with self._proofs_lock:
                self._proofs[(first, second)] = hit
                while len(self._proofs) > 1024:
                    self._proofs.popitem(last=False)
        return hit


def api() -> ApiState:
    state: ApiState = current_app.extensions["sesemi.keyservice"]
    return state
