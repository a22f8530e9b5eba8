"""Group commit (keyservice/group_commit.py) and the action's batched key fetches
(app/key_batch.py): concurrent callers share one commit / one call, an idle
caller is served at once, a failure reaches every caller of its batch, and no
caller waits unbounded."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from flask.testing import FlaskClient

from app.key_batch import RequestKeyBatcher
from keyservice import KeyService, KeyServiceConfig, create_app
from keyservice.group_commit import GroupCommit
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e, json_dumps
from sesemi.errors import AccessDenied, TimeoutExpired, UnavailableError
from sesemi.identity import Identity
from sesemi.timeouts import Deadline


def _threads(n, fn):
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)


def test_concurrent_entries_share_commits_and_an_idle_one_commits_alone():
    commits, lock, next_leaf = [], threading.Lock(), [0]

    def commit(entries):
        time.sleep(0.02)  # a durable commit takes a while: others queue meanwhile
        with lock:
            start = next_leaf[0]
            next_leaf[0] += len(entries)
            commits.append(len(entries))
        return list(range(start, start + len(entries)))

    gc = GroupCommit(commit, max_batch=16)
    assert gc.append({"n": 0}) == 0 and commits == [1]         # idle: a batch of one, at once
    got = []
    _threads(40, lambda i: got.append(gc.append({"n": i})))
    assert sorted(got) == list(range(1, 41))                   # each its own durable leaf
    assert len(commits) - 1 < 40 / 2 and max(commits) <= 16    # shared commits, bounded batches


def test_a_failed_commit_reaches_every_caller_of_its_batch():
    def commit(entries):
        time.sleep(0.01)
        raise UnavailableError("database down")

    gc = GroupCommit(commit)
    errors = []

    def one(i):
        try:
            gc.append({"n": i})
        except UnavailableError as exc:
            errors.append(exc)

    _threads(10, one)
    assert len(errors) == 10


def test_a_follower_waits_a_bounded_time():
    release = threading.Event()

    def commit(entries):
        release.wait(5)
        return list(range(len(entries)))

    gc = GroupCommit(commit, wait_s=0.2)
    leader = threading.Thread(target=gc.append, args=({"n": 0},))
    leader.start()
    time.sleep(0.05)
    with pytest.raises(TimeoutExpired, match="no commit within 0.2 s"):
        gc.append({"n": 1})
    release.set()
    leader.join(5)
    assert gc.append({"n": 2}) == 0   # not wedged: the abandoned entry left the queue


def test_misses_for_one_model_share_one_key_service_call():
    calls = []

    def fetch_many(model_id, users, deadline):
        time.sleep(0.02)
        calls.append(list(users))
        return {"max_requests": 10, "users": {u: ({"refused": "x"} if u.startswith("bad") else
                                                  {"request_key": "k-" + u, "request_key_version": 1})
                                              for u in users}}

    b = RequestKeyBatcher(fetch_many)
    got, refused = {}, []

    def one(i):
        user = f"bad{i}" if i % 5 == 0 else f"u{i}"
        try:
            got[user] = b.fetch("m", user, Deadline(5, "test"))["request_key"]
        except AccessDenied:
            refused.append(user)

    _threads(30, one)
    assert got == {f"u{i}": f"k-u{i}" for i in range(30) if i % 5}
    assert sorted(refused) == sorted(f"bad{i}" for i in range(0, 30, 5))
    assert len(calls) < 30 and sum(map(len, calls)) == 30


def _token(ks: KeyService) -> tuple[str, object]:
    private = hpke_box.new_private_key()
    pub = hpke_box.public_raw(private)
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend("ab" * 32).evidence(report_data_binding(nonce, pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"], private


def test_the_batch_route_releases_and_refuses_each_user_and_audits_each(tmp_path):
    from sesemi.policy import EnclavePolicy

    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True))
    owner = Identity.generate("o")
    users = [Identity.generate(f"u{i}") for i in range(3)]
    for p in (owner, *users):
        ks.register_principal(p.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, "5e" * 16))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "seal_id": "5e" * 16,
                                           "policy": EnclavePolicy(mrenclave=("ab" * 32,)).to_json()})
    for u in users[:2]:
        ks.grant(owner.principal_id, "m", u.principal_id)
        rb = hpke_box.seal(b"r" * 32, ks.hpke_public, hpke_box.info("request-key", "m", u.principal_id))
        ks.put_request_key(u.principal_id, "m", {"wrapped_key": b64e(rb)})
    token, private = _token(ks)
    client: FlaskClient = create_app(ks).test_client()
    before = ks.store.head().size
    ids = [u.principal_id for u in users]
    r = client.post("/v1/enclave/request-keys", data=json_dumps({"model_id": "m", "user_ids": ids}),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = r.get_json()["users"]
    assert r.status_code == 200 and answer[ids[2]] == {"refused": "not granted, or no request key"}
    for u in ids[:2]:
        key = hpke_box.open_(base64.b64decode(answer[u]["request_key"]), private,
                             hpke_box.info("release-request-key", "m", u, str(answer[u]["request_key_version"])))
        assert key == b"r" * 32
    assert ks.store.head().size == before + 3                   # one leaf per user, one commit
    bad = client.post("/v1/enclave/request-keys", data=json_dumps({"model_id": "m", "user_ids": [ids[0]] * 2}),
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert bad.status_code == 400 and "distinct" in bad.get_json()["error"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and b'sesemi_ks_releases_total{outcome="ok"} 2.0' in metrics.data
    assert b"sesemi_ks_commit_batch_size_count" in metrics.data and b"sesemi_ks_write_lock_cpu_seconds" in \
        metrics.data
