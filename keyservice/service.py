"""Key-service logic: principals, models, grants, request keys, enclave
attestation sessions and key release. No HTTP here: api.py maps routes onto
these methods, so the rules are tested and read in one place.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Callable

from sesemi import checkpoint, hpke_box, ks_log, ks_response
from sesemi.attestation import Claims, EvidenceVerifier, check_binding
from sesemi.attestation.backends import TeeBackend, make_backend
from sesemi.attestation.dcap import TIME_FLOOR_SEED, CollateralSource, DcapVerifier, collateral_source
from sesemi.encoding import b64d, b64e, canonical_json, hexd, json_loads
from sesemi.errors import (AccessDenied, AttestationError, AuthError, FormatError, NotFound,
                           PolicyError, RateLimited, ReplayError, SesemiError, StaleSequence)
from sesemi.identity import check_public_key, is_principal_id, principal_id
from sesemi.measure import keyservice_mrenclave
from sesemi.names import check_model_id
from sesemi.policy import EnclavePolicy
from sesemi import ISV_PROD_ID, ISV_SVN

from .config import KeyServiceConfig
from .sealing import ServiceSecrets
from .group_commit import GroupCommit
from .limits import RateLimiter, RefusalCounter
from .metrics import ServiceMetrics
from . import roster_source
from .token_quota import TokenBook
from .store import open_store
from .store_seal import TreeHead


def check_user_id(user_id: str) -> str:
    if not is_principal_id(user_id):
        raise FormatError("user id must be a principal id (from `sesemi identity new`)")
    return user_id


class KeyService:
    def __init__(self, config: KeyServiceConfig, clock: Callable[[], float] = time.time,
                 collateral: CollateralSource | None = None, backend: TeeBackend | None = None,
                 secrets_: ServiceSecrets | None = None) -> None:
        """`clock` is the time for everything, DCAP collateral validity included;
        `collateral` and `backend` override what `config` names (tests);
        `secrets_`: the service identity received by joining a cluster (cluster.py)."""
        self.config = config
        self.clock = clock
        if config.tee != "sim" and config.insecure_sim_attestation:
            # The flag is not part of a hardware measurement: a host could set it on
            # a genuine enclave, whose quote clients trust, and buy keys with forged sim evidence.
            raise FormatError("--insecure-sim-attestation is refused for a hardware-attested key service")
        self.tee = backend or make_backend(config.tee, sim_mrenclave=lambda: keyservice_mrenclave(config.trusted()),
                                           isv_prod_id=ISV_PROD_ID, isv_svn=ISV_SVN)
        self.store = open_store(config.db, pool_size=config.pool_size)
        source = collateral or collateral_source(pccs_url=config.pccs_url, collateral_file=config.collateral_file)
        # The time floor and TCB evaluation numbers persist in the store: a restart must not lower them.
        self.verifier = EvidenceVerifier(
            allow_sim=config.insecure_sim_attestation,
            dcap_verifier=DcapVerifier(source, clock=self.clock, marks=self.store, min_tcb_eval=config.min_tcb_eval,
                                       # never below the (measured) date this service was built
                                       floor_seed=max(TIME_FLOOR_SEED, config.build_date))
            if source is not None else None)
        if secrets_ is None and not config.secrets_path.exists() and self.store.holds_keys():
            # New secrets would leave every stored key undecryptable and break every pin.
            raise SesemiError(f"{config.secrets_path} is missing but the database holds keys: restore the "
                              "secrets file that belongs to this database (refusing to create new ones)")
        self.secrets = secrets_ or ServiceSecrets.load_or_create(config.secrets_path)
        # Resumes the log from its sealed snapshot and follows the leaves after it (store.py).
        # Rows of a database without a log are adopted only by an identity that has
        # never started one (an upgrade), never after (docs/keyservice.md).
        self.store.attach(self.secrets.storage_key, self.clock, adopt_legacy=not self.secrets.log_started)
        if not self.secrets.log_started:
            self.secrets.log_started = True
            self.secrets.save(config.secrets_path)
        if self.verifier.dcap is not None:
            self.verifier.dcap.time_floor()  # persists the built-in seed at first start (a sealed mark)
        self.hpke_public = self.secrets.hpke_public
        self._hpke_private = hpke_box.load_private(self.secrets.hpke_private)
        self.classical_ok = config.insecure_allow_classical_kem
        self.audience = hpke_box.key_id(self.hpke_public)
        self.signer = self.secrets.signer
        self.signing_public = self.secrets.signing_public
        self.mrenclave = self.tee.mrenclave
        # Refusals that would otherwise append a leaf each: attestations and joins
        # (no credential) and releases (any attested enclave may ask), counted and
        # written as one row per check (and model) per maintenance window.
        self.refusals = RefusalCounter(max_keys=256)
        self._refusal_leaves = RateLimiter("refused-release leaves", *config.release_refusal_leaves,
                                           max_addresses=1)
        self.tokens = TokenBook(config.max_tokens_per_measurement, config.max_live_tokens)
        for r in self.store.live_tokens():  # minted before a restart
            c = json_loads(r["claims"])
            self.tokens.mint(r["token_hash"], TokenBook.group_of(c.get("tee"), c.get("mrenclave"), c.get("mrsigner")),
                             float(r["expires"]), used=True)
        self.metrics = ServiceMetrics()
        self.metrics.watch_store(self.store)
        self.log_writer = GroupCommit(self.store.append_entries, max_batch=config.max_commit_batch,
                                      observe=self.metrics.batch)
        self.log_origin = checkpoint.origin_for(self.signing_public)
        self._note: tuple[TreeHead, str] | None = None

    # --- the service's own attestation ------------------------------------
    def self_attestation(self, nonce: bytes) -> dict[str, Any]:
        from sesemi.attestation.claims import report_data_binding

        if not 16 <= len(nonce) <= 64:
            raise FormatError("nonce must be 16..64 bytes")
        return {
            "evidence": self.tee.evidence(report_data_binding(nonce, ks_response.identity(
                self.hpke_public, self.signing_public))),
            "hpke_public_key": b64e(self.hpke_public),
            "signing_public_key": b64e(self.signing_public),
            "hpke_suite": hpke_box.SUITE_NAME,
            "insecure_allow_classical_kem": self.classical_ok,
            "tee": self.tee.name,
            "insecure_simulation": self.tee.simulated,
        }

    # --- the log: signed checkpoints, proofs, receipts --------------------------
    def checkpoint_note(self, head: TreeHead | None = None) -> tuple[TreeHead, str]:
        """The signed note of `head` (default: the current one), signed once per head."""
        head = head or self.store.head()
        cached = self._note
        if cached is not None and cached[0] == head:
            return cached
        note = checkpoint.sign(checkpoint.Checkpoint(self.log_origin, head.size, head.root), self.signer,
                               self.signing_public)
        self._note = (head, note)
        return head, note

    def receipt(self, leaf: int) -> tuple[TreeHead, dict[str, Any]]:
        """An inclusion proof of `leaf` against the signed checkpoint of the current head."""
        head, note = self.checkpoint_note()
        return head, ks_log.Receipt(leaf, self.store.leaf_entry(leaf), self.store.inclusion_proof(leaf, head.size),
                                    note).to_json()

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        """Anyone may ask: hashes and sizes only."""
        head = self.store.head()
        if not 0 <= first <= second <= head.size:
            raise FormatError(f"need 0 <= first <= second <= {head.size} (this log's size)")
        return {"first": first, "second": second,
                "proof": [h.hex() for h in self.store.consistency_proof(first, second)]}

    # --- owner and user calls (already authenticated by the API layer) -----
    def public_key_of(self, pid: str) -> bytes | None:
        row = self.store.get("principals", (pid,))
        return None if row is None else bytes(row["public_key"])

    def maintenance(self) -> None:
        """On a timer (serve() runs it): purge expired nonces and tokens, and
        write the window's refusal counts as one audit row per check."""
        now = self.clock()
        self.store.purge_expired(now)
        self.tokens.purge(now)
        self.store.snapshot()
        counts = self.refusals.drain()
        if counts:
            with self.store.tx() as c:
                for (event, check, model_id), (n, first) in sorted(counts.items(), key=lambda kv: str(kv[0])):
                    self.store.audit(c, now, event, "refused", model_id=model_id,
                                     reason=f"{check}: {first} ({n} refusal(s) in this window)"[:300])

    def claim_call_seq(self, pid: str, seq: int) -> None:
        """Per principal and persisted: no clock, restart or other principal's call
        changes which of this principal's calls are accepted."""
        last = self.store.claim_call_seq(pid, seq)
        if last is not None:
            raise StaleSequence(f"call sequence number {seq} is not above {last}, the last accepted for this "
                                "principal (a replayed or withheld call, or a client counter that fell behind)", last)

    def register_principal(self, public_key: bytes) -> str:
        pid = principal_id(check_public_key(public_key))
        with self.store.tx() as c:
            if self.store.get("principals", (pid,), c) is None:  # registering again writes nothing
                self.store.put(c, "principals", (pid,), {"public_key": public_key, "created": self.clock()},
                               event="register", principal=pid, ts=self.clock())
        return pid

    def _unwrap_upload(self, box_b64: Any, *context: str) -> bytes:
        key = hpke_box.open_(b64d(box_b64, "wrapped_key"), self._hpke_private, hpke_box.info(*context),
                             allow_classical=self.classical_ok)
        if len(key) != 32:
            raise FormatError("wrapped key must hold a 32-byte AES-256 key")
        return key

    def _model_row(self, model_id: str) -> Any:
        row = self.store.get("models", (model_id,))
        if row is None:
            raise NotFound(f"model {model_id!r} is not registered")
        return row

    def _refuse(self, exc: SesemiError, event: str, principal: str, model_id: str,
                user_id: str | None = None) -> None:
        """Audit a refused owner/user call in its own transaction, then raise."""
        with self.store.tx() as c:
            self.store.audit(c, self.clock(), event, "refused", principal=principal, model_id=model_id,
                             user_id=user_id, reason=str(exc)[:200])
        raise exc

    def _require_owner(self, model_id: str, pid: str, event: str) -> Any:
        row = self._model_row(model_id)
        if row["owner"] != pid:
            self._refuse(AccessDenied(f"only the owner of model {model_id!r} may do this"), event, pid, model_id)
        return row

    def put_model(self, owner: str, model_id: str, body: Any) -> dict[str, Any]:
        check_model_id(model_id)
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        policy = EnclavePolicy.from_json(body.get("policy"))
        seal_id = hexd(body.get("seal_id"), "seal_id", 16).hex()
        key = self._unwrap_upload(body.get("wrapped_key"), "model-key", model_id, owner, seal_id)
        ct = self.secrets.encrypt_at_rest(key, "model", model_id)
        now = self.clock()
        with self.store.tx() as c:
            row = self.store.get("models", (model_id,), c)
            foreign = row is not None and row["owner"] != owner
            if not foreign:
                self.store.put(c, "models", (model_id,), {"owner": owner, "key_ct": ct, "updated": now,
                                                          "policy": canonical_json(policy.to_json()).decode()},
                               event="put_model", ts=now, principal=owner, model_id=model_id)
                leaf = c.leaves[-1][0]
                self.store.put_seal_id(c, model_id, seal_id)
        if foreign:
            self._refuse(AccessDenied(f"model {model_id!r} belongs to another owner"), "put_model", owner, model_id)
        head, receipt = self.receipt(leaf)
        return {"model_id": model_id, "owner": owner, "policy": policy.to_json(), "seal_id": seal_id,
                "receipt": receipt, "_head": head}

    def get_model(self, pid: str, model_id: str) -> dict[str, Any]:
        row = self._require_owner(model_id, pid, "get_model")
        grants = self.store.granted_users(model_id)
        return {"model_id": model_id, "owner": row["owner"], "policy": json_loads(row["policy"]), "grants": grants,
                "seal_id": self.store.seal_id(model_id)}

    def grant(self, owner: str, model_id: str, user_id: str) -> tuple[TreeHead, dict[str, Any]]:
        """Returns the receipt of the write (and the head it is proved against)."""
        check_user_id(user_id)
        self._require_owner(model_id, owner, "grant")
        if self.public_key_of(user_id) is None:
            raise NotFound("user is not registered with this key service")
        now = self.clock()
        return self.receipt(self._set_grant(owner, model_id, user_id, True, now))

    def revoke(self, owner: str, model_id: str, user_id: str) -> tuple[TreeHead, dict[str, Any]]:
        check_user_id(user_id)
        self._require_owner(model_id, owner, "revoke")
        now = self.clock()
        return self.receipt(self._set_grant(owner, model_id, user_id, False, now))

    def _set_grant(self, owner: str, model_id: str, user_id: str, active: bool, now: float) -> int:
        """A revocation is the grant's next version, a tombstone, so that putting the
        old grant row back is refused as an old version (store.py). Returns the leaf."""
        event = "grant" if active else "revoke"
        with self.store.tx() as c:
            row = self.store.get("grants", (model_id, user_id), c)
            if row is None and not active:
                return self.store.audit(c, now, event, "ok", principal=owner, model_id=model_id, user_id=user_id)
            granted = row["granted"] if row is not None and row["active"] and active else now
            self.store.put(c, "grants", (model_id, user_id), {"granted": granted, "active": int(active)},
                           event=event, ts=now, principal=owner, model_id=model_id, user_id=user_id)
            return c.leaves[-1][0]

    def _granted(self, model_id: str, user_id: str) -> bool:
        return self.store.is_granted(model_id, user_id)

    def put_request_key(self, user: str, model_id: str, body: Any) -> tuple[int, TreeHead, dict[str, Any]]:
        """Returns the new key's version, which the user's envelopes name, and the receipt."""
        self._model_row(model_id)
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        if not self._granted(model_id, user):
            self._refuse(AccessDenied(f"the owner of {model_id!r} has not granted you access"), "put_request_key",
                         user, model_id, user)
        key = self._unwrap_upload(body.get("wrapped_key"), "request-key", model_id, user)
        ct = self.secrets.encrypt_at_rest(key, "request", model_id, user)
        now = self.clock()
        with self.store.tx() as c:
            row = self.store.get("request_keys", (model_id, user), c)
            version = (int(row["kver"]) if row is not None else 0) + 1
            self.store.put(c, "request_keys", (model_id, user), {"key_ct": ct, "updated": now, "kver": version},
                           event="put_request_key", ts=now, principal=user, model_id=model_id, user_id=user,
                           reason=f"version {version}")
            leaf = c.leaves[-1][0]
        return (version, *self.receipt(leaf))

    def user_status(self, caller: str, user_id: str) -> dict[str, Any]:
        """A user's own standing, per model: granted, request key enrolled. The
        action answers "not granted", "no request key" and "does not
        authenticate" alike (so junk requests learn nothing); this signed call
        is how users tell them apart, for themselves only."""
        check_user_id(user_id)
        if caller != user_id:
            raise AccessDenied("a user's status is readable by that user only")
        # Each row through the sealed read: a revoked grant is a tombstone, and a row
        # the host put there or edited is refused, not reported.
        granted, keyed = self.store.user_standing(user_id)
        return {"user_id": user_id, "models": [{"model_id": m, "granted": m in granted, "request_key": m in keyed}
                                               for m in sorted(granted | keyed)]}

    def audit_log(self, pid: str, model_id: str | None) -> list[dict[str, Any]]:
        return self.audit_answer(pid, model_id)["entries"]

    def audit_answer(self, pid: str, model_id: str | None, verify: bool = False,
                     limit: int = 100, before: int | None = None) -> dict[str, Any]:
        """The newest `limit` entries `pid` may see below leaf `before`, each with its leaf index and
        hash, and the tree head the response's checkpoint names. With `verify`,
        each entry also carries its inclusion proof against that checkpoint, for
        the client to check: proofs of the caller's own entries, never a walk of
        the whole log under the lock (the operator's `sesemi keyservice verify`
        does that, in its own process)."""
        if model_id:
            self._require_owner(model_id, pid, "audit")
        rows = self.store.audit_entries(model_id=model_id or None, visible_to=pid, limit=limit, before=before)
        head = self.store.head()
        entries = []
        for r in rows:
            e = {**ks_log.entry_to_json(r), "leaf": r["leaf"], "hash": r["hash"].hex()}
            if verify:
                e["inclusion_proof"] = [h.hex() for h in self.store.inclusion_proof(r["leaf"], head.size)]
            entries.append(e)
        return {"entries": entries, "head": {"size": head.size, "root": head.root.hex()}, "_head": head}

    # --- enclaves: RCAR (request, challenge, attestation, response) --------
    def new_enclave_nonce(self) -> dict[str, Any]:
        """Anyone may ask (rate-limited per address by the API). The table is
        capped: beyond `max_outstanding_nonces` the oldest are dropped, so an
        enclave that uses its nonce promptly still attests during a flood."""
        nonce = secrets.token_bytes(32)
        self.store.add_nonce(nonce.hex(), self.clock() + self.config.nonce_ttl_s, self.config.max_outstanding_nonces)
        return {"nonce": nonce.hex(), "expires_in": self.config.nonce_ttl_s}

    def evidence_claims(self, evidence: Any) -> Claims:
        """Step 1 of attestation: the evidence's signature chain -> Claims."""
        return self.verifier.claims(evidence)

    def open_session(self, claims: Claims, public_key: bytes) -> dict[str, Any]:
        """Step 3, after the binding check: a token for claims that the policy of
        each model judges at release time. Callers must have checked the binding."""
        now = self.clock()
        token = secrets.token_bytes(32)
        token_hash, expires = hashlib.sha256(token).hexdigest(), now + self.config.token_ttl_s
        with self.store.tx() as c:
            self.store.put_token(c, token_hash, canonical_json(claims.to_json()).decode(), public_key, expires)
            # Per measurement, idle before in use (token_quota.py); the cap below is the backstop.
            for dropped in self.tokens.mint(token_hash, TokenBook.group_of(claims.tee, claims.mrenclave,
                                                                           claims.mrsigner), expires):
                self.store.drop_token(c, dropped)
            # Oldest first beyond the cap: their enclaves re-attest on their next fetch.
            self.store.trim_expiring(c, "tokens", self.config.max_live_tokens)
            self.store.audit(c, now, "attest", "ok", mrenclave=claims.mrenclave, tee=claims.tee)
        return {"token": token.hex(), "expires_in": self.config.token_ttl_s, "claims": claims.to_json(),
                "insecure_simulation": claims.simulated}

    def _take_nonce(self, body: Any) -> tuple[bytes, bytes, float, Any]:
        """Parse (nonce, public key) and consume the nonce before any verification:
        one evidence, one try. Returns the nonce's row (None if unknown or used)."""
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        nonce = hexd(body.get("nonce"), "nonce", 32)
        pub = b64d(body.get("public_key"), "public_key")
        hpke_box.load_public(pub, allow_classical=self.classical_ok)
        now = self.clock()
        return nonce, pub, now, self.store.take_nonce(nonce.hex())

    def attest_enclave(self, body: Any) -> dict[str, Any]:
        """RCAR: consume the nonce, verify the evidence (step 1), check that its
        REPORT_DATA binds (nonce, public key) (step 2), open a session (step 3)."""
        nonce, pub, now, row = self._take_nonce(body)
        try:
            if row is None:
                raise ReplayError("unknown or already used attestation nonce")
            if row < now:
                raise ReplayError("attestation nonce expired")
            claims = self.evidence_claims(body.get("evidence"))
            check_binding(claims, nonce, pub)
        except SesemiError as exc:
            # No credential: counted, one audit row per check and window (maintenance()).
            self.refusals.count("attest", getattr(exc, "check", None) or type(exc).__name__, str(exc))
            raise
        return self.open_session(claims, pub)

    def admit_replica(self, body: Any) -> dict[str, Any]:
        """A replica joining the cluster (cluster.py): its evidence, bound to one of
        our nonces and its ephemeral key, must meet the cluster policy; then it
        receives the service's secrets sealed to that key."""
        from .cluster import cluster_policy, seal_secrets

        nonce, pub, now, row = self._take_nonce(body)
        try:
            if row is None or row < now:
                raise ReplayError("unknown, used or expired attestation nonce")
            claims = self.evidence_claims(body.get("evidence"))
            check_binding(claims, nonce, pub)
            cluster_policy(self.config.cluster_policy, None, self.mrenclave).check(claims)
        except SesemiError as exc:
            # No credential: counted in memory, one audit row per check and window
            # (maintenance()), so junk joins cannot grow the log.
            self.refusals.count("join", getattr(exc, "check", None) or type(exc).__name__, str(exc))
            raise
        with self.store.tx() as c:
            self.store.audit(c, now, "join", "ok", mrenclave=claims.mrenclave, tee=claims.tee)
        return {"secrets": seal_secrets(self.secrets, pub, self.hpke_public)}

    @staticmethod
    def _token_hash(token_hex: str) -> str:
        try:
            return hashlib.sha256(bytes.fromhex(token_hex)).hexdigest()
        except ValueError:
            raise AuthError("malformed attestation token") from None

    def _session(self, token_hex: str) -> tuple[Claims, bytes]:
        row = self.store.get_token(self._token_hash(token_hex))
        if row is None or row["expires"] < self.clock():
            raise AuthError("attestation token unknown or expired: attest again")
        return Claims.from_json(json_loads(row["claims"])), bytes(row["public_key"])

    def _enclave_session(self, token_hex: str) -> tuple[Claims, bytes]:
        claims, pub = self._session(token_hex)
        if claims.simulated and not self.config.insecure_sim_attestation:
            # Tokens outlive restarts: one earned while the flag was on is void without it.
            raise AttestationError("sim evidence refused: this key service was not started with "
                                   "--insecure-sim-attestation", check="sim")
        return claims, pub

    def enclave_roster(self, token_hex: str, body: Any) -> dict[str, Any]:
        """A model's roster (keyservice/roster_source.py), for an enclave whose
        claims meet the model's policy: who is granted is the owner's secret."""
        claims, _ = self._enclave_session(token_hex)
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        model_id = check_model_id(body.get("model_id", ""))
        try:
            EnclavePolicy.from_json(json_loads(self._model_row(model_id)["policy"])).check(claims)
        except PolicyError as exc:
            self.refusals.count("roster", f"policy:{exc.check}", str(exc))
            raise
        out = roster_source.answer(self.store, model_id, body)
        self.tokens.touch(self._token_hash(token_hex))
        return out

    MAX_BATCH_USERS = 64

    def _wrap_request_key(self, rk: Any, pub: bytes, model_id: str, user_id: str) -> tuple[int, str]:
        """(version, the request key HPKE-wrapped to the enclave's key, bound to its context)."""
        key = self.secrets.decrypt_at_rest(rk["key_ct"], "request", model_id, user_id)
        version = int(rk["version"])
        return version, b64e(hpke_box.seal(key, pub, hpke_box.info("release-request-key", model_id, user_id,
                                                                    str(version)),
                                           allow_classical=self.classical_ok))

    def _refusal_is_a_leaf(self, model_id: str, reason: str, detail: str) -> bool:
        """A refused release is a log leaf each while refusals are rare; a flood (any
        attested enclave may ask) is counted instead, one row per check and model
        per window (docs/keyservice.md, "Bounds")."""
        try:
            self._refusal_leaves.take("all")
        except RateLimited:
            self.refusals.count("release", reason, detail, model_id=model_id)
            return False
        return True

    def release_request_keys(self, token_hex: str, body: Any) -> dict[str, Any]:
        """Request keys of several users of one model in one call (an action after a
        burst or a restart): one token, one policy check, each user released or
        refused on its own and each audited, all in one group commit."""
        claims, pub = self._enclave_session(token_hex)
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        model_id = check_model_id(body.get("model_id", ""))
        users = body.get("user_ids")
        if not isinstance(users, list) or not 1 <= len(users) <= self.MAX_BATCH_USERS \
                or len(set(map(str, users))) != len(users):
            raise FormatError(f"user_ids: expected 1..{self.MAX_BATCH_USERS} distinct principal ids")
        users = [check_user_id(u) if isinstance(u, str) else check_user_id("") for u in users]
        now = self.clock()
        row = self.store.get("models", (model_id,))
        try:
            if row is None:
                raise NotFound(f"model {model_id!r} is not registered")
            try:
                EnclavePolicy.from_json(json_loads(row["policy"])).check(claims)
            except PolicyError as exc:
                self.metrics.refusals.labels("release", f"policy:{exc.check}").inc()
                raise
        except SesemiError as exc:
            self.refusals.count("release", getattr(exc, "check", None) or "unknown model", str(exc),
                                model_id=model_id)
            raise
        answers: dict[str, Any] = {}
        entries = []
        for user_id in users:
            base = {"ts": now, "event": "release", "model_id": model_id, "user_id": user_id,
                    "mrenclave": claims.mrenclave, "tee": claims.tee}
            rk = self.store.request_key(model_id, user_id) if self._granted(model_id, user_id) else None
            if rk is None:
                # One answer for both refusals: the action refuses such a user alike either way.
                answers[user_id] = {"refused": "not granted, or no request key"}
                self.metrics.releases.labels("refused").inc()
                if self._refusal_is_a_leaf(model_id, "not granted or no request key", ""):
                    entries.append({**base, "outcome": "refused", "reason": "not granted or no request key"})
                continue
            version, box = self._wrap_request_key(rk, pub, model_id, user_id)
            answers[user_id] = {"request_key_version": version, "request_key": box}
            self.metrics.releases.labels("ok").inc()
            entries.append({**base, "outcome": "ok", "reason": None})
        if entries:  # every user a counted refusal: nothing to log, no write transaction
            self.log_writer.append_many(entries)   # durable before the answer leaves
        self.tokens.touch(self._token_hash(token_hex))
        return {"model_id": model_id, "insecure_simulation": claims.simulated,
                "max_requests": self.config.release_max_requests, "users": answers}

    def release_keys(self, token_hex: str, body: Any) -> dict[str, Any]:
        """Release a model key and/or a user's request key, wrapped (HPKE) to the
        ephemeral key bound into the evidence that earned this token."""
        claims, pub = self._enclave_session(token_hex)
        if not isinstance(body, dict):
            raise FormatError("expected a JSON object")
        model_id = check_model_id(body.get("model_id", ""))
        user_id = body.get("user_id")
        if user_id is not None:
            user_id = check_user_id(user_id)
        want_model = body.get("model_key", True)
        if not isinstance(want_model, bool):
            raise FormatError("model_key: expected true or false")
        now = self.clock()
        out: dict[str, Any] = {"model_id": model_id, "insecure_simulation": claims.simulated,
                               "max_requests": self.config.release_max_requests}

        def refuse(exc: SesemiError, reason: str) -> None:
            self.metrics.releases.labels("refused").inc()
            self.metrics.refusals.labels("release", reason.split(":")[0]).inc()
            if not self._refusal_is_a_leaf(model_id, reason, f"{reason} (mrenclave {claims.mrenclave[:16]}…)"):
                raise exc from None
            self.log_writer.append({"ts": now, "event": "release", "outcome": "refused", "model_id": model_id,
                                    "user_id": user_id, "mrenclave": claims.mrenclave, "tee": claims.tee,
                                    "reason": reason})
            raise exc

        row = self.store.get("models", (model_id,))
        if row is None:
            refuse(NotFound(f"model {model_id!r} is not registered"), "unknown model")
        policy = EnclavePolicy.from_json(json_loads(row["policy"]))
        try:
            policy.check(claims)
        except PolicyError as exc:
            refuse(exc, f"policy:{exc.check}")
        if want_model:
            seal_id = hexd(body.get("seal_id"), "seal_id", 16).hex()
            if seal_id != self.store.seal_id(model_id):
                # An old seal, or another seal under the same key: its chunks are not the published model's.
                refuse(AccessDenied("the pack's seal of this model is not the one its owner published"), "seal_id")
            key = self.secrets.decrypt_at_rest(row["key_ct"], "model", model_id)
            out["model_key"] = b64e(hpke_box.seal(key, pub, hpke_box.info("release-model-key", model_id, seal_id),
                                                  allow_classical=self.classical_ok))
            # The roster's first page rides with the model key, signed with the release.
            out["roster"] = roster_source.answer(self.store, model_id, {})
        if user_id is not None:
            if not self._granted(model_id, user_id):
                refuse(AccessDenied("this user is not granted access to the model (or was revoked)"), "not granted")
            rk = self.store.request_key(model_id, user_id)
            if rk is None:
                refuse(NotFound("this user has not enrolled a request key for the model"), "no request key")
            out["request_key_version"], out["request_key"] = self._wrap_request_key(rk, pub, model_id, user_id)
        # Durable before the answer leaves; releases that arrive together share the commit.
        self.log_writer.append({"ts": now, "event": "release", "outcome": "ok", "model_id": model_id,
                                "user_id": user_id, "mrenclave": claims.mrenclave, "tee": claims.tee,
                                "reason": "model_key" if want_model else None})
        self.tokens.touch(self._token_hash(token_hex))
        self.metrics.releases.labels("ok").inc()
        return out
