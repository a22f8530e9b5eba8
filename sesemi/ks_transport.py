"""Calls to the key service: one host or several replicas, each answer checked
against the pinned signing key, every wait bounded (sesemi.timeouts); and the
enclave's own client (nonce -> evidence -> token -> wrapped keys).

The action imports this and not sesemi.client, whose inference client needs
numpy and urllib3: everything the action imports it pays on every cold start
and carries in its enclave image (docs/performance.md, "Cold start").
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Protocol, Sequence

from . import ks_log, ks_response, stdlib_http
from . import timeouts as T
from .encoding import JSONDecodeError, b64e, json_dumps, json_loads
from .errors import FormatError, IntegrityError, RollbackDetected, TimeoutExpired, UnavailableError
from .http_errors import raise_for
from .ks_state import LogAnswer, StateWitness
from .timeouts import Deadline, Timeouts


class Response(Protocol):
    status: int
    headers: Any
    data: bytes


def _decode(resp: Response, what: str, check: bool = True) -> Any:
    try:
        body = json_loads(resp.data) if resp.data else {}
    except JSONDecodeError:
        body = {"error": f"non-JSON response (HTTP {resp.status})"}
    if check:
        raise_for(resp.status, body, what)
    return body


def _unsigned_reason(resp: Response) -> str:
    try:
        body = json_loads(resp.data)
    except JSONDecodeError:
        return "no reason given"
    err = body.get("error") if isinstance(body, dict) else None
    return err[:120] if isinstance(err, str) else "no reason given"


class _Http:
    """One kept-alive connection pool per host. `pool`: the transport, by default
    sesemi.stdlib_http (key-service calls: small bodies, and the action pays
    every import on every cold start); the SDK's inference client passes its
    urllib3 pool (client.Urllib3Pool), tuned for ~1 MB bodies."""

    def __init__(self, url: str, timeouts: Timeouts, maxsize: int = 16, pool: Any = None) -> None:
        self.url = url.rstrip("/")
        self._pool: Any = pool if pool is not None else stdlib_http.Pool(maxsize)
        self.timeouts = timeouts

    def call(self, method: str, path: str, what: str, body: bytes | None = None,
             headers: Mapping[str, str] | None = None, signed_by: bytes | None = None,
             deadline: Deadline | None = None, check: bool = True,
             witness: StateWitness | None = None) -> tuple[Any, Response]:
        """`signed_by`: the pinned key-service signing key; the response (error
        or not) must carry its signature over our fresh nonce, or is refused.
        `deadline`: a total budget this call shares with others. `check=False`:
        the caller reads error answers itself. `witness`: the answer's log must
        provably extend the checkpoint the witness holds (ks_state.py)."""
        headers = dict(headers or {})
        if signed_by is not None:
            headers.setdefault(ks_response.H_NONCE, secrets.token_hex(16))
        # What we held before sending: the answer must carry a proof from its size.
        sent = witness.held(signed_by.hex()) if witness is not None and signed_by is not None else None
        if sent is not None:
            headers[ks_log.H_KNOWN] = str(sent.size)
        else:
            headers.pop(ks_log.H_KNOWN, None)
        timeout, clipped = T.request_timeout(self.timeouts, deadline)
        try:
            resp = self._pool.request(method, self.url + path, body=body, headers=headers, timeout=timeout)
        except self._pool.errors as exc:
            raise T.explain(exc, what, self.url, self.timeouts, deadline, clipped, self._pool.bound_of) from None
        if signed_by is not None:
            try:
                log = LogAnswer.from_headers(resp.headers)
                ks_response.verify(signed_by, resp.headers.get(ks_response.H_SIGNATURE),
                                   headers[ks_response.H_NONCE], method, path, body or b"", resp.status,
                                   resp.data or b"", log.note, log.proof_from, log.proof)
                # A signed 503 without a proof ("stored log nodes edited", "database behind")
                # relies on no state: it is reported as what it says, not as a fork.
                if witness is not None and not (resp.status >= 500 and not log.proof_from):
                    witness.observe(signed_by.hex(), signed_by, log, sent, what,
                                    lambda lo, hi: self.proof(lo, hi, signed_by, deadline), vouched=True)
            except (IntegrityError, FormatError) as exc:
                detail = ""
                if resp.status >= 400 and not resp.headers.get(ks_response.H_SIGNATURE):
                    # The HTTP server's own refusals (size, malformed request) are unsigned.
                    detail = f" (HTTP {resp.status}, unsigned: {_unsigned_reason(resp)})"
                raise IntegrityError(f"{what}: {exc}{detail}") from None
        return _decode(resp, what, check), resp

    def proof(self, first: int, second: int, signed_by: bytes, deadline: Deadline | None = None) -> list[bytes]:
        """A consistency proof between two checkpoints (hashes only: the checkpoints
        it relates are signed; the proof is checked against them)."""
        body, _ = self.call("GET", f"/v1/log/consistency?first={first}&second={second}", "log consistency proof",
                            signed_by=signed_by, deadline=deadline)
        proof = body.get("proof") if isinstance(body, dict) else None
        if not isinstance(proof, list) or len(proof) > ks_log.MAX_PROOF_HASHES:
            raise FormatError("log consistency proof: expected a short list of hashes")
        try:
            return [bytes.fromhex(h) for h in proof]
        except (TypeError, ValueError):
            raise FormatError("log consistency proof: hashes are not hex") from None


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """`--ks URL[,URL...]`: the replicas of one key service, tried in order."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = [u.strip().rstrip("/") for u in items if u and u.strip()]
    if not out:
        raise FormatError("no key-service URL given")
    return out


class _Replicas:
    """Several replicas of one key service (one identity: each answer is checked
    against the same pinned key). A call that finds a replica down, frozen or
    refusing with a retryable status (503: unavailable, or a replica that found
    its database behind) moves to the next, all within one total budget; the
    same request, signed once, is what each replica receives (docs/keyservice.md
    says how signed calls stay idempotent across replicas)."""

    def __init__(self, urls: str | Sequence[str], timeouts: Timeouts, maxsize: int = 16,
                 budget_s: float | None = None) -> None:
        self.hosts = [_Http(u, timeouts, maxsize) for u in split_urls(urls)]
        self.url = self.hosts[0].url
        self.urls = [h.url for h in self.hosts]
        self.timeouts = timeouts
        # Room for one replica that accepts and never answers, then a live one.
        self.budget_s = budget_s or (timeouts.read_s + timeouts.connect_s + min(timeouts.read_s, 5.0))
        self._good = 0

    def call(self, method: str, path: str, what: str, body: bytes | None = None,
             headers: Mapping[str, str] | None = None, signed_by: bytes | None = None,
             deadline: Deadline | None = None, check: bool = True,
             witness: StateWitness | None = None) -> tuple[Any, Response]:
        if len(self.hosts) == 1:
            return self.hosts[0].call(method, path, what, body, headers, signed_by, deadline, check=check,
                                      witness=witness)
        budget = deadline or Deadline(self.budget_s, f"{what} (failover over {len(self.hosts)} replicas)")
        headers = dict(headers or {})
        if signed_by is not None:
            headers.setdefault(ks_response.H_NONCE, secrets.token_hex(16))
        failures: list[str] = []
        rollback: RollbackDetected | None = None
        start = self._good
        for i in range(len(self.hosts)):
            idx = (start + i) % len(self.hosts)
            try:
                budget.left()
                out = self.hosts[idx].call(method, path, what, body, headers, signed_by, budget, check=check,
                                           witness=witness)
            except RollbackDetected as exc:
                rollback = exc
                failures.append(f"{self.hosts[idx].url}: rollback")
            except UnavailableError as exc:
                if exc is not None and isinstance(exc, TimeoutExpired) and exc.bound == "budget":
                    raise
                failures.append(f"{self.hosts[idx].url}: {exc}")
                continue
            else:
                self._good = idx
                return out
        if rollback is not None:
            raise rollback
        raise UnavailableError(f"{what}: no key-service replica answered ({'; '.join(failures)})")


class EnclaveKeyClient:
    """The enclave side of RCAR: nonce -> evidence -> token -> wrapped keys.
    Keeps one HTTP connection alive (the prototype opened one per fetch)."""

    def __init__(self, url: str, timeouts: Timeouts = T.ENCLAVE_KEYS,
                 ks_signing_key: bytes | None = None) -> None:
        """`ks_signing_key`: the pinned key service (from the enclave's measured
        configuration); with it, every answer must be signed over a fresh nonce
        of ours, so a proxy can neither invent key releases nor replay old ones.
        Every call takes an optional `deadline`: the budget of the request it serves."""
        self.http = _Replicas(url, timeouts, budget_s=T.ENCLAVE_KEY_BUDGET_S)
        self._signed_by = ks_signing_key
        self._witness = StateWitness() if ks_signing_key is not None else None

    def nonce(self, deadline: Deadline | None = None) -> bytes:
        body, _ = self.http.call("POST", "/v1/enclave/nonce", "attestation nonce", signed_by=self._signed_by,
                                 deadline=deadline, witness=self._witness)
        return bytes.fromhex(body["nonce"])

    def attest(self, nonce: bytes, evidence: dict[str, Any], public_key: bytes,
               deadline: Deadline | None = None) -> tuple[str, float]:
        raw = json_dumps({"nonce": nonce.hex(), "evidence": evidence, "public_key": b64e(public_key)})
        body, _ = self.http.call("POST", "/v1/enclave/attest", "enclave attestation", raw,
                                 {"Content-Type": "application/json"}, signed_by=self._signed_by,
                                 deadline=deadline, witness=self._witness)
        return body["token"], float(body["expires_in"])

    def keys(self, token: str, model_id: str, user_id: str | None, model_key: bool,
             deadline: Deadline | None = None, seal_id: str | None = None) -> dict[str, Any]:
        """`seal_id`: the seal of the model in this enclave's pack; a model key is
        released only for the seal its owner published."""
        req: dict[str, Any] = {"model_id": model_id, "model_key": model_key}
        if seal_id is not None:
            req["seal_id"] = seal_id
        if user_id is not None:
            req["user_id"] = user_id
        body, _ = self.http.call("POST", "/v1/enclave/keys", "key release", json_dumps(req),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                                 signed_by=self._signed_by, deadline=deadline,
                                 witness=self._witness)
        return body

    def request_keys(self, token: str, model_id: str, user_ids: Sequence[str],
                     deadline: Deadline | None = None) -> dict[str, Any]:
        """Request keys of several users of one model in one call; the answer's
        `users` maps each id to its wrapped key and version, or to a refusal."""
        body, _ = self.http.call("POST", "/v1/enclave/request-keys", "key release (batch)",
                                 json_dumps({"model_id": model_id, "user_ids": list(user_ids)}),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                                 signed_by=self._signed_by, deadline=deadline, witness=self._witness)
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, dict) or set(users) != set(user_ids):
            raise FormatError("key release (batch): the answer does not name exactly the users asked for")
        return body

