"""SeMIRT: the serving runtime inside the enclave. One instance per process.

`run()` is the warm hot path: parse envelope, look up cached keys, decrypt,
infer, encrypt. No plaintext leaves this module except as ciphertext, and no
error raised here carries request or model bytes.
"""

from __future__ import annotations

import logging
import time
import statistics
from collections import deque
from typing import Any

from sesemi import answer, envelope, tensors
from sesemi.attestation.backends import make_backend
from sesemi.ks_transport import EnclaveKeyClient
from sesemi.errors import AccessDenied, IntegrityError, ModelUnavailable, NotFound, SesemiError, UnavailableError
from sesemi.http_errors import action_error
from sesemi.measure import action_mrenclave
from sesemi.pack import Pack
from sesemi import ISV_PROD_ID, ISV_SVN

from .config import ActionConfig
from .enclave_session import EnclaveSession
from .models import ModelStore
from .replay import ReplayWindow

log = logging.getLogger("sesemi.action")

# One answer for "not granted", "granted but no request key" and "does not
# authenticate under the granted user's key": told apart, they would tell anyone
# who sends junk which users are granted and enrolled. The key service writes
# the reason to its audit log; `sesemi user status` tells users their own state.
NOT_AUTHORISED = "not authorised for this model, or no request key for it (see `sesemi user status`)"
SEALED_REASON = "request refused; the reason is sealed for the user"


class Runtime:
    def __init__(self, config: ActionConfig) -> None:
        config.validate()
        self.config = config
        t0 = time.perf_counter()
        self.pack = Pack(config.pack_path)
        # sim: SIMULATED evidence over a hashed measurement, and every response says so;
        # occlum: DCAP quotes, measured by the CPU.
        self.tee = make_backend(config.tee, isv_prod_id=ISV_PROD_ID, isv_svn=ISV_SVN,
                                sim_mrenclave=lambda: action_mrenclave(config.trusted(), self.pack.manifest_digest),
                                sim_debug=config.insecure_sim_debug)
        self.mrenclave = self.tee.mrenclave
        ks_key = bytes.fromhex(config.ks_key) if config.ks_key else None
        if ks_key is None:
            log.warning("INSECURE: key service not pinned (SESEMI_KS_KEY unset): key releases are not "
                        "authenticated, so whoever sits between this action and the key service could "
                        "hand it keys of its own; allowed only with tee=sim")
        self.session = EnclaveSession(self.tee, EnclaveKeyClient(config.ks_url, ks_signing_key=ks_key),
                                      config.key_ttl_s, budget_s=config.ks_budget_s,
                                      seal_id_of=lambda model_id: self.pack.entry(model_id).seal_id)
        t1 = time.perf_counter()
        self.session.attest()
        self.init_phases = {"pack_and_measure_s": t1 - t0, "attest_s": time.perf_counter() - t1}
        self.models = ModelStore(self.pack, config.effective_pool_size(), config.interp_threads,
                                 config.memory_budget_mb << 20, self._model_key)
        self.replay = ReplayWindow()
        # Recent inference times (the interpreter part alone), so benchmarks can
        # split the action's time into serving overhead and compute.
        self._invoke_s: deque[float] = deque(maxlen=1000)
        self.handle_s: deque[float] = deque(maxlen=1000)  # whole /run handling, body in to body out
        self.first_inference_s: dict[str, float] = {}
        self.init_seconds = time.perf_counter() - t0
        self.labels = {"tee": self.tee.name, "insecure_simulation": self.tee.simulated}
        log.info("initialised: %d model(s) in pack, mrenclave(%s)=%s, attested in-process",
                 len(self.pack.model_ids), self.tee.name, self.mrenclave)

    def _model_key(self, model_id: str) -> bytes:
        mk, _ = self.session.keys(model_id, None, need_model_key=True)
        assert mk is not None
        return mk

    def run(self, value: Any) -> dict[str, Any]:
        req = envelope.Envelope.from_json(value)
        self.pack.entry(req.model_id)  # 404 before any key-service traffic
        # First request for a model fetches both keys in one round trip; after the
        # TTL the request key is fetched again, and that is where revocation bites.
        try:
            _, rk = self.session.keys(req.model_id, req.user_id,
                                      need_model_key=not self.models.is_loaded(req.model_id),
                                      key_version=req.key_version)
            assert rk is not None
            plain = envelope.open_(rk, req, envelope.REQUEST)  # authenticate before any model work
        except (AccessDenied, NotFound, IntegrityError):
            raise AccessDenied(NOT_AUTHORISED) from None
        self.replay.check(req.model_id, req.user_id, req.request_id)
        try:
            outputs = self._infer(req.model_id, plain)
        except (UnavailableError, ModelUnavailable):
            raise  # about this action's pack or links, not the request: retryable elsewhere, plain
        except SesemiError as exc:
            # The request authenticated: its refusal (wrong shape, dtype...) may name
            # the model's input signature, so only the user reads it.
            log.info("/run refused (sealed): %s", type(exc).__name__)
            body = answer.encode(self.tee.name, self.tee.simulated, error=action_error(exc)["error"])
            resp = envelope.seal(rk, req.model_id, req.user_id, req.request_id, envelope.RESPONSE, body,
                                 req.key_version)
            return {"error": {"kind": "SealedError", "status": exc.http_status, "message": SEALED_REASON,
                              "response": resp.to_json()}}
        body = answer.encode(self.tee.name, self.tee.simulated, tensors.encode(outputs))
        resp = envelope.seal(rk, req.model_id, req.user_id, req.request_id, envelope.RESPONSE, body,
                             req.key_version)
        return {"response": resp.to_json(), **self.labels}

    def _infer(self, model_id: str, plain: bytes) -> dict[str, Any]:
        model = self.models.acquire(model_id)
        try:
            t0 = time.perf_counter()
            outputs = model.pool.run(tensors.decode(plain))
            dt = time.perf_counter() - t0
            self._invoke_s.append(dt)
            self.first_inference_s.setdefault(model_id, dt)
        finally:
            self.models.release(model)
        return outputs

    def stats(self) -> dict[str, Any]:
        return {"models_loaded": self.models.loaded_ids, "model_loads": self.models.stats.loads,
                "model_evictions": self.models.stats.evictions, "replay_window": len(self.replay),
                "key_fetches": self.session.key_fetches, "refusals_cached": len(self.session.refusals),
                "roster_refreshes": self.session.rosters.refreshes,
                "mrenclave": self.mrenclave, "init_seconds": self.init_seconds, "init_phases": self.init_phases,
                "model_load_phases": self.models.stats.load_phases[-20:],
                "first_inference_s": self.first_inference_s,
                "key_fetch_seconds": list(self.session.fetch_seconds)[-20:],
                "recent_inference_p50_ms": 1e3 * statistics.median(self._invoke_s) if self._invoke_s else None,
                "recent_run_p50_ms": 1e3 * statistics.median(self.handle_s) if self.handle_s else None,
                "recent_invoke": self.models.invoke_summary(),
                **self.labels}
