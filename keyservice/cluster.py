"""Replicas of one key service: one identity, provisioned by attestation, and
state versions exchanged between live replicas.

Identity. The first replica creates the service's secrets (sealing.py). A new
replica joins by attesting to a running one (`serve --join URL`): it first
checks the running replica's own evidence against the cluster policy (it will
trust that service with nothing less than what it would admit), then sends
evidence whose REPORT_DATA binds a fresh nonce of the running replica and an
ephemeral HPKE key; the running replica checks it under the cluster policy
(by default: exactly its own measurement) and answers the secrets HPKE-sealed
to that key. The secrets never reach the database or a log. Every replica
then presents the same HPKE and signing keys, so one client pin holds for all.

Checkpoints. Each replica asks its peers (`--peer URL`) for their signed
checkpoint every `interval_s`, sending its own tree size, over answers signed
by the service's key (which only attested replicas hold) and bound to a fresh
nonce. A peer's larger tree must come with a consistency proof from ours; a
smaller one must be a prefix of ours (proved from our own log); equal sizes
must have equal roots. Otherwise the two replicas serve forked databases, and
this one refuses to serve. A replica whose database is behind the largest
checkpoint a peer reports refuses too (store.py raises RollbackDetected): the
host restored an older copy under a running cluster. This is ROTE's idea
(rollback protection by a group of enclaves that remember the newest state)
with proofs instead of counters; it cannot cover all replicas restarting at
once, which clients then cover (sesemi/ks_state.py and docs/keyservice.md).
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any, Sequence

import urllib3

from sesemi import checkpoint, hpke_box, ks_log, ks_response, merkle
from sesemi.attestation import Claims, EvidenceVerifier
from sesemi.attestation.backends import TeeBackend
from sesemi.attestation.claims import report_data_binding
from sesemi.encoding import JSONDecodeError, b64d, b64e, canonical_json, json_dumps, json_loads
from sesemi.errors import AttestationError, IntegrityError, PolicyError, SesemiError, UnavailableError
from sesemi.http_errors import raise_for
from sesemi.ks_state import LogAnswer
from sesemi.policy import EnclavePolicy
from sesemi.timeouts import Timeouts

from .sealing import ServiceSecrets
from .store import LogNodesEdited
from .store_seal import TreeHead

if TYPE_CHECKING:
    from .config import KeyServiceConfig

log_ = logging.getLogger("sesemi.keyservice")
PEER_TIMEOUTS = Timeouts(connect_s=1.0, read_s=2.0)
JOIN_TIMEOUTS = Timeouts(connect_s=5.0, read_s=15.0)


class _Http:
    """Replica-to-replica calls. Not the SDK's client: that one brings numpy
    (tensors), which the key service's enclave image does not carry."""

    def __init__(self, url: str, timeouts: Timeouts) -> None:
        self.url = url.rstrip("/")
        self._pool = urllib3.PoolManager(maxsize=4, retries=False)
        self._timeout = urllib3.Timeout(connect=timeouts.connect_s, read=timeouts.read_s)

    def request(self, method: str, path: str, what: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[urllib3.BaseHTTPResponse, str]:
        nonce = secrets.token_hex(16)
        try:
            resp = self._pool.request(method, self.url + path, body=body,
                                      headers={**(headers or {}), ks_response.H_NONCE: nonce}, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise UnavailableError(f"{what}: cannot reach {self.url} ({type(exc).__name__})") from None
        return resp, nonce

    def call(self, method: str, path: str, what: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, signed_by: bytes | None = None) -> tuple[Any, Any]:
        resp, nonce = self.request(method, path, what, body, headers)
        if signed_by is not None:
            verify_answer(signed_by, resp, nonce, method, path, body)
        try:
            data = json_loads(resp.data) if resp.data else {}
        except JSONDecodeError:
            data = {"error": f"non-JSON response (HTTP {resp.status})"}
        raise_for(resp.status, data, what)
        return data, resp


def verify_answer(signed_by: bytes, resp: Any, nonce: str, method: str, path: str,
                  body: bytes | None = None) -> LogAnswer:
    log = LogAnswer.from_headers(resp.headers)
    ks_response.verify(signed_by, resp.headers.get(ks_response.H_SIGNATURE), nonce, method, path, body or b"",
                       resp.status, resp.data or b"", log.note, log.proof_from, log.proof)
    return log


def cluster_policy(config_policy: str | None, own: Claims | None, own_mrenclave: str) -> EnclavePolicy:
    """The policy a replica must meet to join: the configured one (measured into
    the service's trusted settings), else exactly this replica's measurement."""
    if config_policy:
        return EnclavePolicy.from_json(json_loads(config_policy))
    return EnclavePolicy(mrenclave=(own_mrenclave,), allow_debug=bool(own and own.debug))


def seal_secrets(s: ServiceSecrets, to_public: bytes, ks_hpke_public: bytes) -> str:
    plain = canonical_json({"storage_key": b64e(s.storage_key), "hpke_private": b64e(s.hpke_private),
                            "signing_private": b64e(s.signing_private)})
    return b64e(hpke_box.seal(plain, to_public, hpke_box.info("cluster-join", ks_hpke_public.hex())))


def join(url: str, *, tee: TeeBackend, policy: EnclavePolicy, allow_sim: bool,
         timeouts: Timeouts = JOIN_TIMEOUTS) -> ServiceSecrets:
    """Attest the running replica at `url`, attest to it, and receive the service's secrets."""
    http = _Http(url, timeouts)
    n1 = secrets.token_bytes(32)
    body, _ = http.call("GET", f"/v1/attestation?nonce={n1.hex()}", "join: the running replica's attestation")
    claims, hpke_pub, sig_pub = ks_response.verify_attestation(body, n1, EvidenceVerifier(allow_sim=allow_sim),
                                                             "join: the running replica's attestation")
    try:
        policy.check(claims)
    except PolicyError as exc:
        raise AttestationError(f"join: the replica at {url} does not meet the cluster policy ({exc})",
                               check=exc.check) from None
    nb, _ = http.call("POST", "/v1/enclave/nonce", "join: nonce", signed_by=sig_pub)
    nonce = bytes.fromhex(nb["nonce"])
    eph = hpke_box.new_private_key()
    eph_pub = hpke_box.public_raw(eph)
    evidence = tee.evidence(report_data_binding(nonce, eph_pub))
    raw = json_dumps({"nonce": nonce.hex(), "evidence": evidence, "public_key": b64e(eph_pub)})
    answer, _ = http.call("POST", "/v1/cluster/join", "join", raw, {"Content-Type": "application/json"},
                          signed_by=sig_pub)
    plain = hpke_box.open_(b64d(answer.get("secrets"), "secrets"), eph,
                           hpke_box.info("cluster-join", hpke_pub.hex()))
    d = json_loads(plain)
    got = ServiceSecrets(b64d(d["storage_key"]), b64d(d["hpke_private"]), b64d(d["signing_private"]))
    if got.hpke_public != hpke_pub or got.signing_public != sig_pub:
        raise IntegrityError("join: the secrets received are not those of the attested replica")
    return got


def join_cluster(config: KeyServiceConfig, url: str) -> ServiceSecrets:
    """`serve --join URL`: this replica's backend attests; the secrets received
    are kept in the replica's secrets file (sealed storage on SGX), so that a
    restart need not join again."""
    from sesemi import ISV_PROD_ID, ISV_SVN
    from sesemi.attestation.backends import make_backend
    from sesemi.measure import keyservice_mrenclave

    tee = make_backend(config.tee, sim_mrenclave=lambda: keyservice_mrenclave(config.trusted()),
                       isv_prod_id=ISV_PROD_ID, isv_svn=ISV_SVN)
    policy = cluster_policy(config.cluster_policy, None, tee.mrenclave)
    got = join(url, tee=tee, policy=policy, allow_sim=tee.simulated and config.insecure_sim_attestation)
    got.save(config.secrets_path)  # the cluster has its log: this identity adopts no database without one
    return got


class PeerWatch:
    """Polls peers' checkpoints into `store.peer_floor` (a background thread)."""

    def __init__(self, store: Any, signing_public: bytes, peers: Sequence[str], interval_s: float = 1.0) -> None:
        self.store = store
        self.signing_public = signing_public
        self.peers = [_Http(p, PEER_TIMEOUTS) for p in peers]
        self.interval_s = interval_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)

    def poll_once(self) -> int:
        """Check each live peer's checkpoint against ours; returns the largest size seen."""
        best = 0
        for p in self.peers:
            own = self.store.head()
            try:
                resp, nonce = p.request("GET", "/v1/state", "peer state",
                                        headers={ks_log.H_KNOWN: str(own.size)} if own.size else None)
                # Signed by the service key over our nonce: only an attested replica says this.
                # A peer that refuses (its database is behind) still reports what it has seen.
                log = verify_answer(self.signing_public, resp, nonce, "GET", "/v1/state")
                cp = checkpoint.open_(log.note, self.signing_public)
            except (urllib3.exceptions.HTTPError, SesemiError) as exc:
                log_.debug("peer %s: %s", p.url, type(exc).__name__)  # down: says nothing about our database
                continue
            self._relate(p.url, own, TreeHead(cp.size, cp.root), log)
            best = max(best, cp.size)
        return best

    def _relate(self, url: str, own: TreeHead, peer: TreeHead, log: LogAnswer) -> None:
        """The peer's tree and ours must be one history; a fork stops this replica."""
        try:
            if peer.size > own.size and own.size:
                if log.proof_from != str(own.size):
                    raise merkle.ProofError(f"no consistency proof from our size {own.size}")
                merkle.verify_consistency(own.size, peer.size, own.root, peer.root, ks_log.decode_proof(log.proof))
            elif peer.size == own.size and peer.root != own.root:
                raise merkle.ProofError("equal sizes, other roots")
            elif peer.size < own.size and peer.size:
                merkle.verify_consistency(peer.size, own.size, peer.root, own.root,
                                          self.store.consistency_proof(peer.size, own.size))
        except LogNodesEdited as exc:
            self.store.refuse(str(exc))
            return
        except (merkle.ProofError, SesemiError) as exc:
            self.store.refuse(f"peer replica {url} serves another history: its checkpoint "
                              f"({checkpoint.describe(peer.size, peer.root)}) and ours "
                              f"({checkpoint.describe(own.size, own.root)}) are not one log ({exc}): the database "
                              "was forked")
            return
        self.store.observe_peer(peer)

    def start(self) -> "PeerWatch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()
            try:
                self.store.sync()
            except SesemiError as exc:
                log_.error("refusing to serve: %s", exc)

