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

from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.client import EnclaveKeyClient
from sesemi.encoding import b64d
from sesemi.errors import AuthError, FormatError

from .keycache import TtlCache

_REFRESH_MARGIN_S = 5.0


class EnclaveSession:
    def __init__(self, tee, ks: EnclaveKeyClient, key_ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tee = tee
        self.ks = ks
        self.clock = clock
        self._private = hpke_box.new_private_key()
        self.public_key = hpke_box.public_raw(self._private)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._attest_lock = threading.Lock()
        self.cache = TtlCache(key_ttl_s, clock)
        self._fetch_locks: dict[tuple, threading.Lock] = {}
        self._fetch_locks_guard = threading.Lock()
        self.key_fetches = 0
        self.fetch_seconds: deque[float] = deque(maxlen=100)

    def attest(self) -> None:
        """RCAR: nonce from the key service, evidence binding (nonce, our key), token."""
        with self._attest_lock:
            nonce = self.ks.nonce()
            evidence = self.tee.evidence(report_data_binding(nonce, self.public_key))
            self._token, ttl = self.ks.attest(nonce, evidence, self.public_key)
            self._token_expiry = self.clock() + ttl - _REFRESH_MARGIN_S

    def _token_now(self) -> str:
        if self._token is None or self.clock() >= self._token_expiry:
            self.attest()
        assert self._token is not None
        return self._token

    def _lock_for(self, key: tuple) -> threading.Lock:
        with self._fetch_locks_guard:
            return self._fetch_locks.setdefault(key, threading.Lock())

    def keys(self, model_id: str, user_id: str | None, need_model_key: bool) -> tuple[bytes | None, bytes | None]:
        """(model_key, request_key), from cache or one key-service round trip."""
        mk = self.cache.get(("m", model_id)) if need_model_key else None
        rk = self.cache.get(("r", model_id, user_id)) if user_id is not None else None
        if (mk is not None or not need_model_key) and (rk is not None or user_id is None):
            return mk, rk
        # One fetch per missing key set, however many threads ask at once.
        with self._lock_for((model_id, user_id, need_model_key)):
            mk = self.cache.get(("m", model_id)) if need_model_key else None
            rk = self.cache.get(("r", model_id, user_id)) if user_id is not None else None
            want_m = need_model_key and mk is None
            want_r = user_id is not None and rk is None
            if not (want_m or want_r):
                return mk, rk
            t0 = time.perf_counter()
            try:
                body = self.ks.keys(self._token_now(), model_id, user_id if want_r else None, want_m)
            except AuthError:
                self.attest()  # token expired or the service restarted: one fresh attestation
                body = self.ks.keys(self._token_now(), model_id, user_id if want_r else None, want_m)
            self.key_fetches += 1
            self.fetch_seconds.append(time.perf_counter() - t0)
            if want_m:
                mk = self._unwrap(body.get("model_key"), "release-model-key", model_id)
                self.cache.put(("m", model_id), mk)
            if want_r:
                assert user_id is not None
                rk = self._unwrap(body.get("request_key"), "release-request-key", model_id, user_id)
                self.cache.put(("r", model_id, user_id), rk)
            return mk, rk

    def _unwrap(self, box: object, *context: str) -> bytes:
        if box is None:
            raise FormatError("key service response lacks a requested key")
        key = hpke_box.open_(b64d(box, "wrapped key"), self._private, hpke_box.info(*context))
        if len(key) != 32:
            raise FormatError("released key has the wrong length")
        return key
