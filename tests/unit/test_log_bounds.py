"""What the key service's log costs an attacker and a restart (docs/keyservice.md,
"The log" and "Bounds"): junk joins and over-budget signed calls append
nothing; a start-up resumes from a sealed snapshot instead of walking the
history; the service runs no SQL of its own (the store's checked methods are
the only way to rows)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from keyservice import KeyService, KeyServiceConfig, create_app
from sesemi import hpke_box, signed_call
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e, json_dumps
from sesemi.errors import SesemiError
from sesemi.identity import Identity

ROOT = Path(__file__).resolve().parents[2]


def _ks(tmp_path, **kw) -> KeyService:
    return KeyService(dataclasses.replace(KeyServiceConfig(db_path=tmp_path / "ks.db",
                                                           insecure_sim_attestation=True), **kw))


def test_a_thousand_junk_joins_leave_the_log_at_most_a_few_leaves_longer(tmp_path):
    ks = _ks(tmp_path, nonces_per_address=(1e6, 10**6))
    client: FlaskClient = create_app(ks).test_client()
    before = ks.store.head().size
    pub = b64e(hpke_box.public_raw(hpke_box.new_private_key()))
    for i in range(1000):
        nonce = client.post("/v1/enclave/nonce").get_json()["nonce"] if i % 2 else "00" * 32
        ev = SimBackend("cd" * 32).evidence(report_data_binding(bytes.fromhex(nonce), b"x" * 32))
        r = client.post("/v1/cluster/join", data=json_dumps({"nonce": nonce, "evidence": ev, "public_key": pub}),
                        content_type="application/json")
        assert r.status_code in (403, 409), r.get_json()
    ks.maintenance()   # the window's refusals: one audit row per check
    assert ks.store.head().size - before <= 5


def _signed(client: FlaskClient, ks: KeyService, who: Identity, seq: int, path: str):
    headers = signed_call.sign(who, "GET", path, ks.audience, b"", ks.clock(), seq)
    return client.get(path, headers=headers)


def test_one_principals_calls_beyond_its_bucket_are_refused_and_append_nothing(tmp_path):
    ks = _ks(tmp_path, calls_per_principal=(0.001, 20))
    client = create_app(ks).test_client()
    who = Identity.generate("script")
    ks.register_principal(who.public_raw)
    path = f"/v1/users/{who.principal_id}/status"
    for seq in range(1, 21):
        assert _signed(client, ks, who, seq, path).status_code == 200
    size = ks.store.head().size
    r = _signed(client, ks, who, 21, path)
    assert r.status_code == 429 and "signed calls from this principal" in r.get_json()["error"]
    assert ks.store.head().size == size          # refused before its sequence number was claimed
    other = Identity.generate("other")            # another principal's bucket is its own
    ks.register_principal(other.public_raw)
    assert _signed(client, ks, other, 1, f"/v1/users/{other.principal_id}/status").status_code == 200


def test_a_start_up_resumes_from_the_snapshot_not_the_whole_history(tmp_path):
    ks = _ks(tmp_path)
    store = ks.store
    with store.tx() as c:                         # history: 30,000 leaves (releases, refusals...)
        for i in range(30_000):
            store.audit(c, 1.0, "release", "ok", model_id=f"m{i % 7}")
    assert store.snapshot()                       # what maintenance() does every 10,000 leaves
    with store.tx() as c:
        for i in range(50):
            store.audit(c, 2.0, "release", "refused")
    head = store.head()
    again = _ks(tmp_path)
    assert again.store.head() == head
    assert again.store.leaves_read <= 51          # the leaves after the snapshot, and none before
    # The operator's full walk still reads every leaf, and agrees.
    import keyservice

    assert keyservice.verify_database(str(tmp_path / "ks.db"))["tree_size"] == head.size


def test_an_edited_snapshot_is_refused_at_start_up(tmp_path):
    ks = _ks(tmp_path)
    with ks.store.tx() as c:
        ks.store.audit(c, 1.0, "release", "ok")
    assert ks.store.snapshot(every=1)
    import sqlite3

    with sqlite3.connect(tmp_path / "ks.db") as con:
        con.execute("UPDATE log_snapshots SET last_leaf = zeroblob(32)")
    with pytest.raises(SesemiError, match="snapshot does not authenticate"):
        _ks(tmp_path)


def test_the_service_and_its_api_run_no_sql():
    """Every read and write of rows goes through the store's named, checked methods."""
    sql = re.compile(r"\b(SELECT \S|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|DROP TABLE)\b")
    for name in ("keyservice/service.py", "keyservice/api.py"):
        text = (ROOT / name).read_text()
        hits = [line for line in text.splitlines() if sql.search(line) and not line.strip().startswith("#")]
        assert not hits, f"{name} runs SQL: {hits[:3]}"


def test_log_routes_refuse_bad_numbers_with_a_reason(tmp_path):
    """Checkpoints and proofs are public: bad input gets a JSON 4xx, never a 500."""
    ks = _ks(tmp_path)
    client = create_app(ks).test_client()
    for q in ("first=%C2%B2&second=1", "first=1", "first=-1&second=1", "first=2&second=1", "first=0&second=99",
              "first=99999999999999999999&second=1"):
        r = client.get(f"/v1/log/consistency?{q}")
        assert r.status_code == 400 and r.get_json()["error"], (q, r.status_code)
    r = client.get("/v1/log/checkpoint", headers={"X-Sesemi-KS-Known-Size": "²"})
    assert r.status_code == 200 and "X-Sesemi-KS-Proof" not in r.headers
    assert client.get("/v1/log/checkpoint").get_json()["checkpoint"].startswith("sesemi-keyservice/")
