"""This enclave's standing with the key service: one ephemeral HPKE key per
enclave lifetime, an attestation token, and the keys released to it.

The ephemeral private key never leaves this object; every released key
arrives HPKE-wrapped to it, bound to (purpose, model, user).
"""

from __future__ import annotations

import threading
from collections import deque
import time
from typing import Any, Callable

from sesemi.attestation.backends import TeeBackend

from sesemi import envelope, hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.ks_roster import fetch_roster
from sesemi.ks_transport import EnclaveKeyClient
from sesemi.encoding import b64d
from sesemi.errors import AccessDenied, AuthError, FormatError, NotFound
from sesemi.timeouts import ENCLAVE_KEY_BUDGET_S, Deadline

from .key_batch import RequestKeyBatcher
from .keycache import RefusalCache, TtlCache
from .rosters import RosterBook

_REFRESH_MARGIN_S = 5.0
_FETCH_STRIPES = 64
# A (model, user) on the roster that the key service nonetheless refused (a
# revocation the roster has not caught up with) is refused here for this long
# (or the key TTL, if shorter) without asking again (app/keycache.py
# RefusalCache), at most this many pairs.
_REFUSAL_TTL_S, _REFUSALS_MAX = 5.0, 4096


class EnclaveSession:
    def __init__(self, tee: TeeBackend, ks: EnclaveKeyClient, key_ttl_s: float,
                 clock: Callable[[], float] = time.monotonic, budget_s: float = ENCLAVE_KEY_BUDGET_S,
                 seal_id_of: Callable[[str], str] | None = None) -> None:
        """`budget_s`: everything one request may spend on the key service (waiting
        for another thread's fetch, re-attesting, fetching), then a retryable refusal.
        `seal_id_of(model_id)`: the seal id in this enclave's pack, which a model
        key is released for (and bound to)."""
        self._seal_id_of = seal_id_of
        self.tee = tee
        self.ks = ks
        self.clock = clock
        self.budget_s = budget_s
        self._private = hpke_box.new_private_key()
        self.public_key = hpke_box.public_raw(self._private)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._attest_lock = threading.Lock()
        self.cache = TtlCache(key_ttl_s, clock)
        # Striped, not one lock per (model, user): the user id comes from an
        # unauthenticated envelope, so a dict of locks would grow without bound.
        self._fetch_locks = [threading.Lock() for _ in range(_FETCH_STRIPES)]
        # Who may send each model requests: everyone else is refused here, alike,
        # at no key-service cost (app/rosters.py).
        self.rosters = RosterBook(self._fetch_roster, key_ttl_s, clock)
        # No longer than a release is held: a grant then takes effect within the key
        # TTL, as a revocation does.
        self.refusals = RefusalCache(min(_REFUSAL_TTL_S, key_ttl_s), _REFUSALS_MAX, clock)
        self.key_fetches = 0
        self.fetch_seconds: deque[float] = deque(maxlen=100)
        # Misses for several users of one model share one call (app/key_batch.py).
        self._batch = RequestKeyBatcher(self._fetch_many) if hasattr(ks, "request_keys") else None

    def _deadline(self) -> Deadline:
        return Deadline(self.budget_s, "key service", time.monotonic)

    @staticmethod
    def _take(lock: threading.Lock, deadline: Deadline) -> None:
        """Wait for a lock another request holds (it may be stuck on the key service) within our budget."""
        if not lock.acquire(timeout=deadline.left()):
            raise deadline.expired()

    def attest(self, deadline: Deadline | None = None) -> None:
        """RCAR: nonce from the key service, evidence binding (nonce, our key), token."""
        deadline = deadline or self._deadline()
        self._take(self._attest_lock, deadline)
        try:
            nonce = self.ks.nonce(deadline)
            evidence = self.tee.evidence(report_data_binding(nonce, self.public_key))
            self._token, ttl = self.ks.attest(nonce, evidence, self.public_key, deadline)
            self._token_expiry = self.clock() + ttl - _REFRESH_MARGIN_S
        finally:
            self._attest_lock.release()

    def _token_now(self, deadline: Deadline) -> str:
        if self._token is None or self.clock() >= self._token_expiry:
            self.attest(deadline)
        assert self._token is not None
        return self._token

    def _lock_for(self, key: tuple) -> threading.Lock:
        return self._fetch_locks[hash(key) % _FETCH_STRIPES]

    def _with_token(self, call: Callable[[str], dict], deadline: Deadline) -> dict:
        try:
            return call(self._token_now(deadline))
        except AuthError:
            self.attest(deadline)  # token expired or the service restarted: one fresh attestation
            return call(self._token_now(deadline))

    def _fetch_roster(self, model_id: str, since: int | None, after: str, deadline: Deadline) -> dict:
        fetch = getattr(self.ks, "roster", None)  # a stand-in key service in tests
        if fetch is None:
            return self._with_token(lambda t: fetch_roster(self.ks, t, model_id, since, after, deadline), deadline)
        return self._with_token(lambda t: fetch(t, model_id, since, after, deadline), deadline)

    def keys(self, model_id: str, user_id: str | None, need_model_key: bool,
             key_version: int | None = None) -> tuple[bytes | None, bytes | None]:
        """(model_key, request_key), from cache or the key service. A user the
        model's roster does not list is refused here (AccessDenied, as for
        every refused user), without a key-service call. `key_version`: the
        request-key version the request names."""
        deadline = self._deadline()
        mk = self._model_key(model_id, deadline) if need_model_key else None
        if user_id is None:
            return mk, None
        listed = self._admit(model_id, user_id, key_version, deadline)
        return mk, self._request_key(model_id, user_id, listed, deadline)

    def _admit(self, model_id: str, user_id: str, key_version: int | None, deadline: Deadline) -> int:
        """Admission: the request-key version the model's roster lists for the
        user; AccessDenied, with no key-service call, for a user it does not list."""
        return self.rosters.version_of(model_id, user_id, key_version, deadline)

    def _model_key(self, model_id: str, deadline: Deadline) -> bytes:
        mk = self.cache.get(("m", model_id))  # each get counts a use of the key
        if mk is not None:
            return mk
        lock = self._lock_for(("m", model_id))
        self._take(lock, deadline)  # one fetch however many threads ask at once
        try:
            mk = self.cache.get(("m", model_id))
            if mk is not None:
                return mk
            if self._seal_id_of is None:
                raise FormatError("this enclave session has no pack to name a model's seal id")
            seal_id = self._seal_id_of(model_id)
            body, max_uses = self._release(model_id, None, deadline, seal_id)
            mk = self._unwrap(body.get("model_key"), "release-model-key", model_id, seal_id)
            self.cache.put(("m", model_id), mk, max_uses - 1)  # this load is the first use
            self.rosters.seed(model_id, body.get("roster"), deadline)
            return mk
        finally:
            lock.release()

    def _held_request_key(self, model_id: str, user_id: str, listed: int) -> bytes | None:
        """The cached request key (one use counted), or None to fetch: also when
        the roster lists a newer version than the one held (the user
        re-enrolled). The roster decides, not the envelope's claimed version,
        which is unauthenticated: junk claiming a newer one costs nothing."""
        entry = self.cache.get(("r", model_id, user_id))
        if entry is None:
            return None
        rk, version = entry
        return None if version < listed else rk

    def _request_key(self, model_id: str, user_id: str, listed: int, deadline: Deadline) -> bytes:
        rk = self._held_request_key(model_id, user_id, listed)
        if rk is not None:
            return rk
        lock = self._lock_for((model_id, user_id))
        self._take(lock, deadline)  # one fetch however many threads ask at once
        try:
            rk = self._held_request_key(model_id, user_id, listed)
            return rk if rk is not None else self._fetch_request_key(model_id, user_id, deadline)
        finally:
            lock.release()

    def _fetch_request_key(self, model_id: str, user_id: str, deadline: Deadline) -> bytes:
        """Fetch and unwrap the user's request key, and cache it (the caller
        holds the pair's fetch lock)."""
        body, max_uses = self._release_unless_refused(model_id, user_id, deadline)
        version = body.get("request_key_version")
        if type(version) is not int or not 1 <= version <= envelope.MAX_KEY_VERSION:
            raise FormatError("key release lacks a valid request_key_version")
        rk = self._unwrap(body.get("request_key"), "release-request-key", model_id, user_id, str(version))
        self.cache.put(("r", model_id, user_id), (rk, version), max_uses - 1)  # this request: the first use
        return rk

    def _release_unless_refused(self, model_id: str, user_id: str,
                                deadline: Deadline) -> tuple[dict[str, Any], int]:
        """Admission at the key service: a pair it refused moments ago (a
        revocation the roster has not caught up with) is refused again here
        without asking; a new refusal is remembered."""
        if (model_id, user_id) in self.refusals:
            raise AccessDenied("refused by the key service moments ago")
        try:
            return self._release(model_id, user_id, deadline)
        except (AccessDenied, NotFound):
            self.refusals.add((model_id, user_id))
            raise

    def _release(self, model_id: str, user_id: str | None, deadline: Deadline,
                 seal_id: str | None = None) -> tuple[dict[str, Any], int]:
        """One key release: the answer and the number of uses it allows."""
        t0 = time.perf_counter()
        if user_id is not None and seal_id is None and self._batch is not None:
            body = self._batch.fetch(model_id, user_id, deadline)
        else:
            body = self._with_token(lambda t: self.ks.keys(t, model_id, user_id, seal_id is not None, deadline,
                                                           seal_id=seal_id), deadline)
            self.key_fetches += 1
        self.fetch_seconds.append(time.perf_counter() - t0)
        # The release states (signed) how many requests a released key may serve:
        # the bound that holds when the TTL's clock, the host's, is stalled.
        max_uses = body.get("max_requests")
        if type(max_uses) is not int or not 1 <= max_uses <= 1 << 31:
            raise FormatError("key release lacks a valid max_requests (an older key service?)")
        return body, max_uses

    def _fetch_many(self, model_id: str, user_ids: list[str], deadline: Deadline) -> dict:
        self.key_fetches += 1
        return self._with_token(lambda t: self.ks.request_keys(t, model_id, user_ids, deadline), deadline)

    def _unwrap(self, box: object, *context: str) -> bytes:
        if box is None:
            raise FormatError("key service response lacks a requested key")
        key = hpke_box.open_(b64d(box, "wrapped key"), self._private, hpke_box.info(*context))
        if len(key) != 32:
            raise FormatError("released key has the wrong length")
        return key
