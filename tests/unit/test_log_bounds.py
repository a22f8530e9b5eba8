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
        for _ in range(50):
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
    names = ["keyservice/service.py", "keyservice/api.py", "keyservice/api_state.py", "keyservice/http_request.py",
             *(str(p.relative_to(ROOT)) for p in (ROOT / "keyservice" / "routes").glob("*.py"))]
    for name in names:
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


def _owner_with_model(ks: KeyService) -> Identity:
    from sesemi.policy import EnclavePolicy

    owner = Identity.generate("owner")
    ks.register_principal(owner.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, "5e" * 16))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": EnclavePolicy(mrenclave=("ab" * 32,))
                                           .to_json(), "seal_id": "5e" * 16})
    return owner


def test_an_edited_stored_node_is_reported_as_an_edit_not_served_as_a_fork(tmp_path):
    """The service checks the proofs it serves against its own root: an edited
    node gives a signed 503 naming the edit, which the SDK reports as such."""
    import sqlite3

    ks = _ks(tmp_path)
    for _i in range(40):
        with ks.store.tx() as c:
            ks.store.audit(c, 1.0, "release", "ok")
    assert ks.store.snapshot(every=1)
    again = _ks(tmp_path)  # resumed from the snapshot: nodes below it come from the database
    with sqlite3.connect(tmp_path / "ks.db") as con:
        con.execute("UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 4 AND idx = 0")
    client = create_app(again).test_client()
    r = client.get("/v1/log/checkpoint", headers={"X-Sesemi-KS-Known-Size": "17"})
    assert r.status_code == 503 and "stored nodes" in r.get_json()["error"]
    assert "X-Sesemi-KS-Proof" not in r.headers and r.headers["X-Sesemi-Response-Signature"]


def test_proofs_for_a_held_size_come_from_the_address_bucket_without_a_credential(tmp_path):
    ks = _ks(tmp_path, proofs_per_address=(0.001, 5))
    client = create_app(ks).test_client()
    with ks.store.tx() as c:
        for _ in range(10):
            ks.store.audit(c, 1.0, "release", "ok")
    codes = [client.get("/healthz-nope", headers={"X-Sesemi-KS-Known-Size": "3"}).status_code for _ in range(8)]
    assert codes[:5] == [404] * 5 and set(codes[5:]) == {429}
    assert client.get("/healthz").status_code == 200       # without the header: no proof, no bucket


def test_audit_with_proofs_is_capped_and_pages_by_leaf(tmp_path):
    ks = _ks(tmp_path)
    owner = _owner_with_model(ks)
    with ks.store.tx() as c:
        for _ in range(300):
            ks.store.audit(c, 1.0, "release", "ok", model_id="m")
    client = create_app(ks).test_client()

    def audit(seq: int, query: str):
        path = f"/v1/audit?{query}"
        return client.get(path, headers=signed_call.sign(owner, "GET", path, ks.audience, b"", ks.clock(), seq))

    assert audit(1, "verify=1&limit=201").status_code == 400
    page = audit(2, "verify=1&limit=200").get_json()["entries"]
    assert len(page) == 200 and all("inclusion_proof" in e for e in page)
    older = audit(3, f"limit=200&before={page[0]['leaf']}").get_json()["entries"]
    assert older and older[-1]["leaf"] < page[0]["leaf"]


def test_entries_without_a_leaf_are_never_shown(tmp_path):
    """Audit rows the host inserts (or strips of their leaf) are not part of the log."""
    import sqlite3

    ks = _ks(tmp_path)
    owner = _owner_with_model(ks)
    with sqlite3.connect(tmp_path / "ks.db") as con:
        con.execute("INSERT INTO audit (seq, ts, event, outcome, model_id, user_id) VALUES "
                    "(999999, 1.0, 'grant', 'ok', 'm', ?)", ("00" * 32,))
    entries = ks.audit_answer(owner.principal_id, "m")["entries"]
    assert entries and all(e["leaf"] is not None for e in entries)
    assert not any(e["user_id"] == "00" * 32 for e in entries)


def test_self_registered_principals_of_one_address_share_one_write_bucket(tmp_path):
    ks = _ks(tmp_path, writes_per_address=(0.001, 10), registrations_per_address=(1e6, 10**6))
    client = create_app(ks).test_client()
    codes = []
    for i in range(14):
        who = Identity.generate(f"sybil{i}")
        body = json_dumps({"public_key": b64e(who.public_raw)})
        h = signed_call.sign(who, "POST", "/v1/principals", ks.audience, body, ks.clock(), 1)
        codes.append(client.post("/v1/principals", data=body, headers={**h, "Content-Type": "application/json"})
                     .status_code)
    assert codes[:10] == [200] * 10 and set(codes[10:]) == {429}


def test_a_hostile_receipt_is_refused_with_a_reason():
    from sesemi.ks_log import AUDIT_FIELDS, Receipt

    entry = {**{f: None for f in AUDIT_FIELDS}, "ts": True}
    with pytest.raises(SesemiError, match="ts is not a string"):
        Receipt.from_json({"format": "sesemi-ks-receipt/v1", "leaf_index": 0, "entry": entry,
                           "inclusion_proof": [], "checkpoint": ""})
