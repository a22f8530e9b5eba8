"""This enclave's standing with the key service: one ephemeral HPKE key per
enclave lifetime, an attestation token, and the keys released to it.

The ephemeral private key never leaves this object; every released key
arrives HPKE-wrapped to it, bound to (purpose, model, user).
"""

from __future__ import annotations

import threading
from collections import deque
import time
from typing import Callable

from sesemi import envelope, hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.ks_transport import EnclaveKeyClient
from sesemi.encoding import b64d
from sesemi.errors import AccessDenied, AuthError, FormatError, NotFound, UnavailableError
from sesemi.timeouts import ENCLAVE_KEY_BUDGET_S, Deadline

from .keycache import RefusalCache, TtlCache
from .token_bucket import TokenBucket

_REFRESH_MARGIN_S = 5.0
_FETCH_STRIPES = 64
# Refetches for a newer request-key version, all users together: 2 a second, bursts of 5.
_REFETCH_RATE, _REFETCH_BURST = 2.0, 5.0
# Fetches of a request key this action holds neither the key nor a recent
# refusal for, all users together. The user id is unauthenticated, so junk
# requests naming ever new ids would otherwise each cost a key-service round
# trip and an audit row; honest traffic needs one per user per key TTL
# (SESEMI_KEY_TTL, 60 s) and the key service answers ~600 releases/s
# (docs/performance.md), so 50/s per action, bursts of 200, leaves room for a
# cold action meeting many users at once. Over it: a retryable refusal.
_NEW_USER_RATE, _NEW_USER_BURST = 50.0, 200.0
# A (model, user) the key service refused is refused here for this long (or
# the key TTL, if shorter) without asking again (app/keycache.py RefusalCache),
# at most this many pairs.
_REFUSAL_TTL_S, _REFUSALS_MAX = 5.0, 4096


class EnclaveSession:
    def __init__(self, tee, ks: EnclaveKeyClient, key_ttl_s: float,
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
        self._refetches = TokenBucket(_REFETCH_RATE, _REFETCH_BURST, clock)
        self._new_users = TokenBucket(_NEW_USER_RATE, _NEW_USER_BURST, clock)
        # No longer than a release is held: a grant then takes effect within the key
        # TTL, as a revocation does.
        self.refusals = RefusalCache(min(_REFUSAL_TTL_S, key_ttl_s), _REFUSALS_MAX, clock)
        self.key_fetches = 0
        self.fetch_seconds: deque[float] = deque(maxlen=100)

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

    def _refetch_allowed(self) -> bool:
        """A token bucket shared by all (model, user): refetches for a newer
        request-key version, which an unauthenticated envelope can claim."""
        return self._refetches.take()

    def _held_request_key(self, model_id: str, user_id: str, key_version: int | None) -> bytes | None:
        """The cached request key (one use counted), or None to fetch: also when the
        request names a newer version than the one held (the user re-enrolled).
        Such refetches are rate-limited (`_refetch_allowed`): the version comes from
        an unauthenticated envelope, and a junk request claiming a newer one would
        otherwise cost a round trip each. Held back, it simply fails to
        authenticate under the held key."""
        entry = self.cache.get(("r", model_id, user_id))
        if entry is None:
            return None
        rk, version = entry
        if key_version is not None and version < key_version and self._refetch_allowed():
            return None
        return rk

    def keys(self, model_id: str, user_id: str | None, need_model_key: bool,
             key_version: int | None = None) -> tuple[bytes | None, bytes | None]:
        """(model_key, request_key), from cache or one key-service round trip.
        `key_version`: the request-key version the request names."""
        mk = self.cache.get(("m", model_id)) if need_model_key else None
        rk = self._held_request_key(model_id, user_id, key_version) if user_id is not None else None
        if (mk is not None or not need_model_key) and (rk is not None or user_id is None):
            return mk, rk
        # One fetch per missing key set, however many threads ask at once.
        deadline = self._deadline()
        lock = self._lock_for((model_id, user_id, need_model_key))
        self._take(lock, deadline)
        try:
            # Only what was missing: each get counts a use of the key.
            if need_model_key and mk is None:
                mk = self.cache.get(("m", model_id))
            if user_id is not None and rk is None:
                rk = self._held_request_key(model_id, user_id, key_version)
            want_m = need_model_key and mk is None
            want_r = user_id is not None and rk is None
            if not (want_m or want_r):
                return mk, rk
            if want_r:
                if (model_id, user_id) in self.refusals:
                    raise AccessDenied("refused by the key service moments ago")
                if self.cache.peek(("r", model_id, user_id)) is None and not self._new_users.take():
                    raise UnavailableError("key service: too many key fetches for users this action holds no "
                                           "key for; retry")
            seal_id = None
            if want_m:
                if self._seal_id_of is None:
                    raise FormatError("this enclave session has no pack to name a model's seal id")
                seal_id = self._seal_id_of(model_id)
            t0 = time.perf_counter()
            try:
                try:
                    body = self.ks.keys(self._token_now(deadline), model_id, user_id if want_r else None, want_m,
                                        deadline, seal_id=seal_id)
                except AuthError:
                    self.attest(deadline)  # token expired or the service restarted: one fresh attestation
                    body = self.ks.keys(self._token_now(deadline), model_id, user_id if want_r else None, want_m,
                                        deadline, seal_id=seal_id)
            except (AccessDenied, NotFound):
                if want_r:
                    self.refusals.add((model_id, user_id))
                raise
            self.key_fetches += 1
            self.fetch_seconds.append(time.perf_counter() - t0)
            # The release states (signed) how many requests a released key may serve:
            # the bound that holds when the TTL's clock, the host's, is stalled.
            max_uses = body.get("max_requests")
            if type(max_uses) is not int or not 1 <= max_uses <= 1 << 31:
                raise FormatError("key release lacks a valid max_requests (an older key service?)")
            if want_m:
                assert seal_id is not None
                mk = self._unwrap(body.get("model_key"), "release-model-key", model_id, seal_id)
                self.cache.put(("m", model_id), mk, max_uses - 1)  # this load is the first use
            if want_r:
                assert user_id is not None
                version = body.get("request_key_version")
                if type(version) is not int or not 1 <= version <= envelope.MAX_KEY_VERSION:
                    raise FormatError("key release lacks a valid request_key_version")
                rk = self._unwrap(body.get("request_key"), "release-request-key", model_id, user_id, str(version))
                self.cache.put(("r", model_id, user_id), (rk, version), max_uses - 1)  # this request: the first use
            return mk, rk
        finally:
            lock.release()

    def _unwrap(self, box: object, *context: str) -> bytes:
        if box is None:
            raise FormatError("key service response lacks a requested key")
        key = hpke_box.open_(b64d(box, "wrapped key"), self._private, hpke_box.info(*context))
        if len(key) != 32:
            raise FormatError("released key has the wrong length")
        return key
