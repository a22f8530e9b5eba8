"""Attacker review of the throughput change (group commit, caches, shared
follows, batched request keys). Each test states what SHOULD hold and fails on
the reviewed code. The host's database faults are injected at the backend's
query boundary (`Store._read`): what a host that kills or delays one query on
the database server does (PostgreSQL: pg_terminate_backend / pg_cancel_backend)."""

from __future__ import annotations

import threading
import time

from flask.testing import FlaskClient

from app.key_batch import RequestKeyBatcher
from keyservice import KeyService, KeyServiceConfig, create_app
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e, json_dumps
from sesemi.errors import StoreUnavailable, TimeoutExpired
from sesemi.identity import Identity
from sesemi.policy import EnclavePolicy
from sesemi.timeouts import Deadline

MR = "ab" * 32


def _token(ks: KeyService) -> str:
    private = hpke_box.new_private_key()
    pub = hpke_box.public_raw(private)
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(MR).evidence(report_data_binding(nonce, pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]


def _world(ks: KeyService) -> tuple[Identity, Identity]:
    owner, user = Identity.generate("o"), Identity.generate("u")
    for p in (owner, user):
        ks.register_principal(p.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, "5e" * 16))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "seal_id": "5e" * 16,
                                           "policy": EnclavePolicy(mrenclave=(MR,)).to_json()})
    ks.grant(owner.principal_id, "m", user.principal_id)
    rb = hpke_box.seal(b"r" * 32, ks.hpke_public, hpke_box.info("request-key", "m", user.principal_id))
    ks.put_request_key(user.principal_id, "m", {"wrapped_key": b64e(rb)})
    return owner, user


def _release(client: FlaskClient, token: str, user: str):
    return client.post("/v1/enclave/keys", data=json_dumps({"model_id": "m", "user_id": user, "model_key": False}),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def test_a_failed_follow_does_not_let_the_next_request_use_a_stale_grant(tmp_path):
    """Replica B (same database as A) has the user's grant in its row cache. A
    revokes. Long after (well beyond follow_max_age_s), the host kills B's next
    follow query (request R1 gets a 503) and lets request R2 through within the
    follow age: R2 skips its follow (one 'began' recently), reads the grant from
    B's stale version map + row cache, and the revoked user's request key is
    released. The docs promise an answer reflects every write committed
    follow_max_age_s before its request."""
    age = 0.25  # the window for R2 only (robust on a loaded machine); the staleness itself is unbounded
    cfg = KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True, follow_max_age_s=age)
    a = KeyService(cfg)
    owner, user = _world(a)
    b = KeyService(cfg)                       # a second replica over the same database
    token = _token(b)
    cb = create_app(b).test_client()
    assert _release(cb, token, user.principal_id).status_code == 200   # B caches the grant row
    a.revoke(owner.principal_id, "m", user.principal_id)
    time.sleep(2 * age)                       # the revocation is now older than any follow age

    real_read, killed = b.store._read, []

    def host_kills_the_follow(sql, args):
        if sql.startswith("SELECT * FROM audit WHERE leaf >=") and not killed:
            killed.append(sql)
            raise StoreUnavailable("database unavailable (host terminated the query)")
        return real_read(sql, args)

    b.store._read = host_kills_the_follow
    assert cb.get("/healthz").status_code == 503 and killed   # R1: its follow was killed
    r2 = _release(cb, token, user.principal_id)                # R2, within the follow age of R1
    assert r2.status_code == 403, ("a replica released a request key for a user revoked "
                                   f"{2 * age:g} s before the request: {r2.status_code} {r2.get_json()}")


def test_a_batch_leaders_short_budget_does_not_fail_its_followers():
    """The call is made under its leader's deadline, and the leader of each
    batch is the waiter that queued first during the previous call: the one
    with the least budget left. A follower with a full budget batched behind
    it gets the leader's TimeoutExpired although its own budget would have
    covered the call."""
    def fetch_many(model_id, users, deadline):
        end = time.monotonic() + 0.3          # the key service takes 0.3 s (busy)
        while time.monotonic() < end:
            deadline.left()                   # raises once the budget is spent, as the transport does
            time.sleep(0.01)
        return {"max_requests": 10, "users": {u: {"request_key": "k", "request_key_version": 1} for u in users}}

    b = RequestKeyBatcher(fetch_many)
    out: dict[str, object] = {}

    def one(name, user, budget):
        try:
            out[name] = b.fetch("m", user, Deadline(budget, name))
        except TimeoutExpired as exc:
            out[name] = exc

    ts = [threading.Thread(target=one, args=("first", "u0", 5.0))]
    ts[0].start()                                   # call 1: 0 .. 0.3 s
    time.sleep(0.05)
    ts.append(threading.Thread(target=one, args=("old", "u1", 0.4)))   # queues at 0.05, ends at 0.45
    ts[-1].start()
    time.sleep(0.15)
    ts.append(threading.Thread(target=one, args=("fresh", "u2", 5.0)))  # queues at 0.2, 5 s budget
    ts[-1].start()
    for t in ts:
        t.join(5)
    assert isinstance(out["first"], dict)
    assert isinstance(out["fresh"], dict), f"a follower with a 5 s budget failed with its leader's: {out['fresh']}"


def test_an_audit_row_outside_the_log_is_a_clear_refusal_not_a_permanent_500(tmp_path):
    """`_next_seq` is kept in memory and learnt only from leaves: one row the
    host inserts into `audit` without a leaf index, at the next row id, makes
    every write collide on the primary key (sqlite3/psycopg IntegrityError, a
    500 'internal error'), and a restart learns the same id again. Before, the
    row id came from MAX(seq) under the lock."""
    import sqlite3

    cfg = KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True)
    ks = KeyService(cfg)
    _, user = _world(ks)
    token = _token(ks)
    c = create_app(ks).test_client()
    assert _release(c, token, user.principal_id).status_code == 200
    db = sqlite3.connect(tmp_path / "ks.db")
    top = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    db.execute("INSERT INTO audit (seq, event, outcome, ts) VALUES (?, 'x', 'ok', 0)", (top + 1,))
    db.commit()
    r = _release(c, token, user.principal_id)
    assert r.status_code != 500, "a host-inserted audit row wedges every write with a bare 500"


def test_a_batch_whose_users_are_all_counted_refusals_takes_no_write_transaction(tmp_path):
    """Beyond the refusal-leaf bucket a refusal is counted, not logged; a batch
    whose every user is such a refusal still runs an (empty) write transaction:
    the cluster-wide lock, a follow under it and a commit, for nothing."""
    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True,
                                     release_refusal_leaves=(0.001, 1)))
    _world(ks)
    token = _token(ks)
    c = create_app(ks).test_client()
    junk = [Identity.generate(f"j{i}").principal_id for i in range(3)]
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    c.post("/v1/enclave/request-keys", data=json_dumps({"model_id": "m", "user_ids": junk[:1]}), headers=h)
    before = ks.store.stats.write_txs
    r = c.post("/v1/enclave/request-keys", data=json_dumps({"model_id": "m", "user_ids": junk[1:]}), headers=h)
    assert r.status_code == 200 and all("refused" in a for a in r.get_json()["users"].values())
    assert ks.store.stats.write_txs == before, "an empty write transaction per all-refused batch"
