"""Client SDK: what the `sesemi` command line (and any Python program) uses to
talk to the key service and to inference actions."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import urllib3

from . import answer, checkpoint, envelope, hpke_box, ks_log, ks_response, merkle, signed_call, tensors, urllib3_errors
from .attestation import EvidenceVerifier
from .call_seq import CallCounter
from .attestation.claims import Claims
from .attestation.dcap import DcapVerifier
from .encoding import b64e, json_dumps
from .errors import IntegrityError, AttestationError, FormatError, PinMismatch, StaleSequence
from . import ks_state
from .ks_state import StateWitness
from .http_errors import raise_for
from .identity import Identity
from .policy import DEFAULT_TCB_STATUSES, EnclavePolicy
from . import timeouts as T
from .timeouts import Timeouts
from .ks_transport import EnclaveKeyClient, Response, _Http, _Replicas, split_urls  # noqa: F401 - re-exported


_SEQ_ATTEMPTS = 4  # a stale sequence number: resend above the last accepted one, a few times at most


@dataclass(frozen=True)
class KsPin:
    """What `sesemi ks attest` verified and later calls insist on."""

    url: str
    hpke_public_key: str  # hex
    tee: str
    mrenclave: str
    mrsigner: str
    isv_svn: int
    insecure_simulation: bool
    tcb_status: str | None = None  # DCAP only: as judged when pinned
    signing_public_key: str = ""   # hex; signs every response (sesemi/ks_response.py)
    # The service said it accepts X25519-only key transport (--insecure-allow-classical-kem).
    # Informational: what binds it is the measurement the client pins.
    insecure_allow_classical_kem: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def audience(self) -> str:
        """The pinned HPKE key's id (hpke_box.key_id): what signed calls name and
        `X-Sesemi-KS-Key` says."""
        return hpke_box.key_id(bytes.fromhex(self.hpke_public_key))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "KsPin":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _check_signer_pin(expect_mrsigner: str | None, isv_prod_id: int | None, min_isv_svn: int | None) -> None:
    if expect_mrsigner and (isv_prod_id is None or min_isv_svn is None):
        raise FormatError("--expect-mrsigner needs --expect-isv-prod-id and --min-isv-svn (a signer's "
                          "older or other enclaves would pass otherwise)")


def judge_key_service(claims: Claims, *, expect_mrenclave: str | None = None, expect_mrsigner: str | None = None,
                      expect_isv_prod_id: int | None = None, min_isv_svn: int | None = None,
                      accept_tcb_statuses: Sequence[str] = (), accept_advisories: Sequence[str] = ()) -> None:
    """The client's policy for a key service, through the same EnclavePolicy
    that key services apply to enclaves: expected identity, no debug enclave,
    and (hardware evidence) a TCB status that is UpToDate unless the user
    accepts more, with no advisory the user has not accepted.

    A signer signs every release: pinned by mrsigner alone, an older, vulnerable
    key-service release (or another product) of the same signer would pass, so
    `expect_mrsigner` requires a product id and a minimum ISV SVN."""
    if claims.debug:
        raise AttestationError("key service runs as a debug enclave: refusing to trust it", check="debug")
    mrenclave = tuple(m.lower() for m in (expect_mrenclave,) if m)
    mrsigner = tuple(m.lower() for m in (expect_mrsigner,) if m)
    _check_signer_pin(expect_mrsigner, expect_isv_prod_id, min_isv_svn)
    if not mrenclave and not mrsigner:
        if not claims.simulated:
            # A valid quote only proves that *some* enclave holds the key; which one is the point.
            raise AttestationError("a hardware-attested key service must be pinned by --expect-mrenclave "
                                   "or --expect-mrsigner", check="expected_identity")
        return
    statuses = tuple(dict.fromkeys((*DEFAULT_TCB_STATUSES, *accept_tcb_statuses)))
    EnclavePolicy(mrenclave=mrenclave, mrsigner=mrsigner, isv_prod_id=expect_isv_prod_id,
                  min_isv_svn=min_isv_svn or 0, tcb_statuses=statuses,
                  advisory_allowlist=tuple(accept_advisories)).check(claims)


def attest_key_service(url: str, *, insecure_sim: bool = False, expect_mrenclave: str | None = None,
                       expect_mrsigner: str | None = None, dcap_verifier: DcapVerifier | None = None,
                       accept_tcb_statuses: Sequence[str] = (), expect_isv_prod_id: int | None = None,
                       min_isv_svn: int | None = None, accept_advisories: Sequence[str] = (),
                       timeouts: Timeouts | None = None) -> KsPin:
    """Verify the key service's evidence (sim, or a DCAP quote with
    `dcap_verifier`), that its REPORT_DATA binds its HPKE key to our fresh
    nonce, and that it is the key service we expect (`judge_key_service`).

    `url` may list several replicas (comma-separated): each is attested, and
    all must present the same identity; the pin keeps them all, for failover."""
    _check_signer_pin(expect_mrsigner, expect_isv_prod_id, min_isv_svn)  # before any network call
    urls = split_urls(url)
    pins = [_attest_one(u, insecure_sim=insecure_sim, expect_mrenclave=expect_mrenclave,
                        expect_mrsigner=expect_mrsigner, dcap_verifier=dcap_verifier,
                        accept_tcb_statuses=accept_tcb_statuses, expect_isv_prod_id=expect_isv_prod_id,
                        min_isv_svn=min_isv_svn, accept_advisories=accept_advisories, timeouts=timeouts)
            for u in urls]
    for p in pins[1:]:
        if (p.hpke_public_key, p.signing_public_key) != (pins[0].hpke_public_key, pins[0].signing_public_key):
            raise PinMismatch(f"key service replicas disagree: {p.url} presents another identity than "
                              f"{pins[0].url} (not replicas of one key service)")
    return replace(pins[0], url=",".join(p.url for p in pins))


def _attest_one(url: str, *, insecure_sim: bool, expect_mrenclave: str | None, expect_mrsigner: str | None,
                dcap_verifier: DcapVerifier | None, accept_tcb_statuses: Sequence[str],
                expect_isv_prod_id: int | None, min_isv_svn: int | None, accept_advisories: Sequence[str],
                timeouts: Timeouts | None) -> KsPin:
    http = _Http(url, timeouts or T.KEY_SERVICE.with_env())
    nonce = secrets.token_bytes(32)
    body, _ = http.call("GET", f"/v1/attestation?nonce={nonce.hex()}", "key service attestation")
    claims, pub, sig_pub = ks_response.verify_attestation(
        body, nonce, EvidenceVerifier(allow_sim=insecure_sim, dcap_verifier=dcap_verifier), "key service attestation")
    judge_key_service(claims, expect_mrenclave=expect_mrenclave, expect_mrsigner=expect_mrsigner,
                      expect_isv_prod_id=expect_isv_prod_id, min_isv_svn=min_isv_svn,
                      accept_tcb_statuses=accept_tcb_statuses, accept_advisories=accept_advisories)
    return KsPin(url=http.url, hpke_public_key=pub.hex(), tee=claims.tee, mrenclave=claims.mrenclave,
                 mrsigner=claims.mrsigner, isv_svn=claims.isv_svn, insecure_simulation=claims.simulated,
                 tcb_status=claims.tcb_status, signing_public_key=sig_pub.hex(),
                 insecure_allow_classical_kem=body.get("insecure_allow_classical_kem") is True)


class KeyServiceClient:
    """Owner and user calls. Every call is signed; every secret is HPKE-wrapped
    to the pinned key, and a response from a key service with another key is
    refused (it was reset or replaced: attest it again)."""

    def __init__(self, pin: KsPin, timeouts: Timeouts | None = None,
                 clock: Callable[[], float] = time.time, counter: CallCounter | None = None,
                 witness: StateWitness | None = None) -> None:
        """`timeouts`: default `timeouts.KEY_SERVICE`, overridden by the environment.
        `counter`: where the per-principal call sequence numbers live (the CLI
        keeps them in $SESEMI_HOME); in memory by default. `witness`: the highest
        state version seen of this key service (the CLI keeps it in $SESEMI_HOME)."""
        self.pin = pin
        self.http = _Replicas(pin.url, timeouts or T.KEY_SERVICE.with_env())
        self.witness = witness or StateWitness()
        self.clock = clock
        self.counter = counter or CallCounter()

    def _signed(self, identity: Identity, method: str, path: str, what: str, obj: Any = None) -> Any:
        return self._signed_answer(identity, method, path, what, obj)[0]

    def _signed_answer(self, identity: Identity, method: str, path: str, what: str,
                       obj: Any = None) -> tuple[Any, urllib3.BaseHTTPResponse]:
        raw = json_dumps(obj) if obj is not None else b""
        if not self.pin.signing_public_key:
            raise PinMismatch("this pin predates signed key-service responses: run `sesemi ks attest` again")
        # One signed call per principal in flight (call_seq.py): numbers must arrive
        # in order, and one held by the network must not be resent after a later one.
        # The wait: what another process's call may take (each try has the replicas' budget).
        with self.counter.sending(identity.principal_id, _SEQ_ATTEMPTS * self.http.budget_s):
            return self._send_signed(identity, method, path, what, raw)

    def _send_signed(self, identity: Identity, method: str, path: str, what: str, raw: bytes) -> Any:
        pid = identity.principal_id
        seq = self.counter.next(pid)
        for attempt in range(_SEQ_ATTEMPTS):
            headers = signed_call.sign(identity, method, path, self.pin.audience, raw, self.clock(), seq)
            headers["Content-Type"] = "application/json"
            try:
                body, resp = self.http.call(method, path, what, raw, headers,
                                            signed_by=bytes.fromhex(self.pin.signing_public_key),
                                            witness=self.witness)
                break
            except StaleSequence as exc:
                # Signed by the pinned key service over our nonce: our counter is behind
                # (a new machine, a restored home), or another process of ours sent a
                # later number first. The call was not carried out: resending is safe.
                if attempt == _SEQ_ATTEMPTS - 1:
                    raise
                seq = self.counter.next_after(pid, exc.last_seq)
        served_by = resp.headers.get("X-Sesemi-KS-Key")
        if served_by and served_by != self.pin.audience:
            raise PinMismatch("the key service's key differs from the pinned one: run `sesemi ks attest` again")
        return body, resp

    def _receipt(self, body: Any, resp: Any, event: str, **fields: str) -> ks_log.Receipt:
        """The write's receipt: its leaf is the write asked for, and it is included in
        the answer's own checkpoint (which the witness has just accepted)."""
        receipt = ks_log.Receipt.from_json(body.get("receipt") if isinstance(body, dict) else None)
        receipt.verify(bytes.fromhex(self.pin.signing_public_key))
        if receipt.note != ks_state.LogAnswer.from_headers(resp.headers).note:
            raise IntegrityError(f"{event}: the receipt is not for the answer's checkpoint")
        got = {k: receipt.entry.get(k) for k in ("event", *fields)}
        if got != {"event": event, **fields} or receipt.entry.get("outcome") != "ok":
            raise IntegrityError(f"{event}: the receipt records another write ({got})")
        return receipt

    def _wrap(self, key: bytes, *context: str) -> str:
        # Hybrid only: a pin to an X25519-only key is refused here (hpke_box.Downgrade).
        return b64e(hpke_box.seal(key, bytes.fromhex(self.pin.hpke_public_key), hpke_box.info(*context)))

    def register(self, identity: Identity) -> str:
        body = self._signed(identity, "POST", "/v1/principals", "register",
                            {"public_key": b64e(identity.public_raw)})
        return body["principal_id"]

    def publish_model(self, owner: Identity, model_id: str, model_key: bytes, policy: EnclavePolicy,
                      seal_id: str) -> dict:
        """`seal_id`: the seal's (`SealedHeader.seal_id`); the key service releases
        the key only to enclaves whose pack holds that seal."""
        body, resp = self._signed_answer(owner, "PUT", f"/v1/models/{model_id}", "publish model", {
            "wrapped_key": self._wrap(model_key, "model-key", model_id, owner.principal_id, seal_id),
            "policy": policy.to_json(),
            "seal_id": seal_id,
        })
        self._receipt(body, resp, "put_model", model_id=model_id, principal=owner.principal_id)
        return body

    def get_model(self, owner: Identity, model_id: str) -> dict:
        return self._signed(owner, "GET", f"/v1/models/{model_id}", "get model")

    def grant(self, owner: Identity, model_id: str, user_id: str) -> ks_log.Receipt:
        """Returns the receipt: the grant's leaf, proved in the signed log."""
        body, resp = self._signed_answer(owner, "PUT", f"/v1/models/{model_id}/grants/{user_id}", "grant")
        return self._receipt(body, resp, "grant", model_id=model_id, user_id=user_id)

    def revoke(self, owner: Identity, model_id: str, user_id: str) -> ks_log.Receipt:
        body, resp = self._signed_answer(owner, "DELETE", f"/v1/models/{model_id}/grants/{user_id}", "revoke")
        return self._receipt(body, resp, "revoke", model_id=model_id, user_id=user_id)

    def enroll(self, user: Identity, model_id: str, request_key: bytes) -> int:
        """Returns the key's version: envelopes sealed under it must name it."""
        return self.enroll_with_receipt(user, model_id, request_key)[0]

    def enroll_with_receipt(self, user: Identity, model_id: str, request_key: bytes) -> tuple[int, ks_log.Receipt]:
        body, resp = self._signed_answer(user, "PUT", f"/v1/models/{model_id}/request-key", "enroll", {
            "wrapped_key": self._wrap(request_key, "request-key", model_id, user.principal_id),
        })
        version = body.get("version") if isinstance(body, dict) else None
        if type(version) is not int or not 1 <= version <= envelope.MAX_KEY_VERSION:
            raise FormatError("enroll: the key service did not state the key's version (an older key service?)")
        return version, self._receipt(body, resp, "put_request_key", model_id=model_id, user_id=user.principal_id)

    def checkpoint(self) -> tuple[checkpoint.Checkpoint, str]:
        """The current signed checkpoint, proved against the one this client holds."""
        body, resp = self.http.call("GET", "/v1/log/checkpoint", "log checkpoint",
                                    signed_by=bytes.fromhex(self.pin.signing_public_key), witness=self.witness)
        note = ks_state.LogAnswer.from_headers(resp.headers).note
        return checkpoint.open_(note, bytes.fromhex(self.pin.signing_public_key)), note

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self.http.hosts[0].proof(first, second, bytes.fromhex(self.pin.signing_public_key))

    def user_status(self, user: Identity) -> dict[str, Any]:
        """This user's own grants and enrolled request keys (signed; nobody else's)."""
        return self._signed(user, "GET", f"/v1/users/{user.principal_id}/status", "user status")

    def audit(self, identity: Identity, model_id: str | None = None) -> list[dict]:
        return self.audit_answer(identity, model_id)["entries"]

    def audit_answer(self, identity: Identity, model_id: str | None = None, verify: bool = False) -> dict:
        """Entries, each checked to be the leaf it names, and the log's head (the signed
        checkpoint); with `verify`, each entry's inclusion proof in that checkpoint,
        checked here."""
        query = "&".join(q for q in (f"model_id={model_id}" if model_id else "", "verify=1" if verify else "") if q)
        body, resp = self._signed_answer(identity, "GET", "/v1/audit" + (f"?{query}" if query else ""), "audit")
        head = body.get("head") if isinstance(body, dict) else None
        signed = checkpoint.open_(ks_state.LogAnswer.from_headers(resp.headers).note,
                                  bytes.fromhex(self.pin.signing_public_key))
        if not isinstance(head, dict) or (head.get("size"), head.get("root")) != (signed.size, signed.root.hex()):
            raise IntegrityError("audit: the log head in the answer is not the signed checkpoint")
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise FormatError("audit: expected a list of entries")
        for e in entries:
            check_entry(e, signed, verify)
        return body


def check_entry(e: Any, cp: checkpoint.Checkpoint, with_proof: bool) -> None:
    """An audit entry is the leaf it claims to be; with its inclusion proof, that
    leaf is in the signed checkpoint (the client checks; the service is not trusted)."""
    if not isinstance(e, dict) or type(e.get("leaf")) is not int:
        raise FormatError("audit: an entry without its leaf index")
    fields = {k: e.get(k) for k in ks_log.AUDIT_FIELDS}
    leaf = ks_log.leaf_of(e["leaf"], ks_log.entry_from_json(fields))
    if e.get("hash") != leaf.hex():
        raise IntegrityError(f"audit: entry {e['leaf']} is not the leaf it claims to be")
    if with_proof:
        proof = e.get("inclusion_proof")
        try:
            merkle.verify_inclusion(leaf, e["leaf"], cp.size, [bytes.fromhex(h) for h in proof], cp.root)
        except (TypeError, ValueError):
            raise FormatError(f"audit: entry {e['leaf']} has a malformed inclusion proof") from None
        except merkle.ProofError as exc:
            raise IntegrityError(f"audit: entry {e['leaf']} is not in the signed log ({exc})") from None


class Urllib3Pool:
    """The inference client's transport: urllib3 connection pools, no retries.
    On ~1 MB bodies it beats http.client and requests (docs/performance.md);
    the key-service calls use sesemi.stdlib_http instead."""

    errors = (urllib3.exceptions.HTTPError,)
    bound_of = staticmethod(urllib3_errors.bound_of)

    def __init__(self, maxsize: int = 16) -> None:
        self._pool = urllib3.PoolManager(maxsize=maxsize, retries=False)

    def request(self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: tuple[float, float] = (5.0, 90.0)) -> urllib3.BaseHTTPResponse:
        return self._pool.request(method, url, body=body, headers=headers,
                                  timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))


_ANSWER_FIELDS = frozenset({"response", "tee", "insecure_simulation"})


@dataclass(frozen=True)
class InferenceResult:
    outputs: dict[str, np.ndarray]
    request_id: str
    tee: str
    insecure_simulation: bool


class ActionClient:
    """Encrypts a request for one (model, user), posts it to an action's /run
    (or through anything that forwards it: the platform, a router), and
    decrypts and checks the answer."""

    def __init__(self, url: str, timeouts: Timeouts | None = None, path: str = "/run",
                 maxsize: int = 16) -> None:
        """`timeouts`: default `timeouts.INFERENCE`, overridden by the environment."""
        self.http = _Http(url, timeouts or T.INFERENCE.with_env(), maxsize, pool=Urllib3Pool(maxsize))
        self.url = self.http.url
        self.path = path

    def infer(self, model_id: str, user_id: str, request_key: bytes, inputs: Mapping[str, np.ndarray],
              key_version: int = 1) -> InferenceResult:
        """`key_version`: what `enroll` returned for `request_key` (1 for a first enrolment)."""
        rid = envelope.new_request_id()
        env = envelope.seal(request_key, model_id, user_id, rid, envelope.REQUEST, tensors.encode(inputs),
                            key_version)
        body, resp = self.http.call("POST", self.path, "inference", json_dumps({"value": env.to_json()}),
                                    {"Content-Type": "application/json"}, check=False)
        if not isinstance(body, dict):
            raise FormatError("inference: response is not a JSON object")
        err = body.get("error")
        if isinstance(err, dict) and "response" in err:
            # A refusal of a request that authenticated: its reason is sealed for us.
            got = self._open(err["response"], model_id, user_id, rid, request_key, key_version)
            if got.error is None:
                raise FormatError("inference: a sealed refusal without its reason")
            raise_for(got.error["status"], {"error": got.error}, "inference")
        if err is not None or resp.status >= 300:
            raise_for(resp.status if resp.status >= 300 else 502, body if err is not None else {}, "inference")
        if set(body) - _ANSWER_FIELDS:
            raise FormatError("inference: unexpected fields in the answer")
        got = self._open(body.get("response"), model_id, user_id, rid, request_key, key_version)
        if got.error is not None:
            raise FormatError("inference: a sealed refusal in a success answer")
        # The plain copies of the labels must agree with the authenticated ones.
        for name, value in (("tee", got.tee), ("insecure_simulation", got.insecure_simulation)):
            if name in body and body[name] != value:
                raise IntegrityError(f"inference: the answer's {name} label was altered in transit")
        outputs = tensors.decode(got.body)
        return InferenceResult({k: np.array(v) for k, v in outputs.items()}, rid, got.tee, got.insecure_simulation)

    @staticmethod
    def _open(value: Any, model_id: str, user_id: str, rid: str, request_key: bytes,
              key_version: int) -> answer.Answer:
        resp = envelope.Envelope.from_json(value)
        if (resp.model_id, resp.user_id, resp.request_id, resp.key_version) != (model_id, user_id, rid, key_version):
            raise FormatError("inference: response is for another request")
        return answer.decode(envelope.open_(request_key, resp, envelope.RESPONSE))
