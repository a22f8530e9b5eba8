"""An upgrade from the schema the key service used before replicas (version 1,
SQLite, no user_version): the data is kept, its rows are sealed and entered
in a new ledger, the release path agrees with the old tables, and the old
audit entries stay readable."""

from __future__ import annotations

import keyservice

import sqlite3
from pathlib import Path

from keyservice.config import KeyServiceConfig
from keyservice.sealing import ServiceSecrets
from keyservice.service import KeyService
from keyservice.store_sqlite import TRIGGERS
from keyservice.store_schema import V1, statements
from keyservice.store_sqlite import TYPES
from sesemi.encoding import canonical_json
from sesemi.identity import Identity

from .conftest import MR, SEAL, Flow


def _old_database(path, secrets: ServiceSecrets, owner: Identity, user: Identity) -> None:
    """Rows exactly as the pre-replica code wrote them (its INSERTs, its schema)."""
    con = sqlite3.connect(path, isolation_level=None)
    for stmt in statements(V1, TYPES):
        con.execute(stmt)
    con.executescript(TRIGGERS)
    for p in (owner, user):
        con.execute("INSERT INTO principals VALUES (?,?,?)", (p.principal_id, p.public_raw, 1.5))
    con.execute("INSERT INTO models VALUES (?,?,?,?,?)",
                ("m", owner.principal_id, secrets.encrypt_at_rest(b"k" * 32, "model", "m"),
                 canonical_json({"mrenclave": [MR]}).decode(), 2.0))
    con.execute("INSERT INTO model_seals VALUES (?,?)", ("m", SEAL))
    con.execute("INSERT INTO grants VALUES (?,?,?)", ("m", user.principal_id, 3.0))
    con.execute("INSERT INTO request_keys VALUES (?,?,?,?)",
                ("m", user.principal_id, secrets.encrypt_at_rest(b"r" * 32, "request", "m", user.principal_id), 4.0))
    con.execute("INSERT INTO request_key_versions VALUES (?,?,?)", ("m", user.principal_id, 3))
    con.execute("INSERT INTO call_seqs VALUES (?,?)", (owner.principal_id, 7))
    con.execute("INSERT INTO meta VALUES (?,?)", ("mark:dcap/time_floor", 1234.0))
    for ev in ("register", "register", "put_model", "grant", "put_request_key"):
        con.execute("INSERT INTO audit (ts, event, outcome, principal) VALUES (?,?,?,?)",
                    (5.0, ev, "ok", owner.principal_id))
    con.close()


def test_upgrade_from_the_unversioned_schema_keeps_the_data(tmp_path):
    config = KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True)
    secrets = ServiceSecrets.load_or_create(config.secrets_path)
    secrets.log_started = False
    secrets.save(config.secrets_path)            # a secrets file from before the log
    owner, user = Identity.generate("o"), Identity.generate("u")
    _old_database(config.db_path, secrets, owner, user)

    ks = KeyService(config)
    assert ks.store.schema_version == 3 and ks.store.migrated_from == 1
    f = Flow(ks, owner, user)
    out = f.release()
    assert "model_key" in out and "request_key" in out
    assert out["request_key_version"] == 3                         # the enrolment's version survived
    assert ks.get_model(owner.principal_id, "m")["grants"] == [user.principal_id]
    assert ks.store.mark("dcap/time_floor") == 1234.0
    assert ks.store.claim_call_seq(owner.principal_id, 7) == 7     # the replay floor survived
    # The old audit trail stays in the table but is not shown: no leaf proves it.
    events = [e["event"] for e in ks.audit_log(owner.principal_id, None)]
    assert "release" in events and "put_model" not in events
    assert keyservice.verify_database(str(config.db_path))["rows"] >= 7
    # Reopened (now version 3): nothing is migrated again, the log resumes.
    ks2 = KeyService(config)
    assert ks2.store.migrated_from is None and ks2.store.head() == ks.store.head()
    f.release(ks2)
    # Revocation after the upgrade is a tombstone, as for new data.
    ks2.revoke(owner.principal_id, "m", user.principal_id)
    assert ks2.get_model(owner.principal_id, "m")["grants"] == []


def test_upgrade_from_the_hash_chain_schema_adopts_every_row_at_its_version(tmp_path):
    """A schema-2 database (a MACed hash chain, made by the previous release and
    kept in tests/fixtures/ks-schema2 with its throwaway sim service secrets):
    its chain is checked once, its rows adopted at the versions it records, and
    a revocation made before the upgrade still holds after it."""
    import json
    import shutil
    import sqlite3
    from types import SimpleNamespace

    import pytest

    from sesemi.errors import AccessDenied, IntegrityError

    from .conftest import Flow

    src = Path(__file__).resolve().parents[1] / "fixtures" / "ks-schema2"
    for name in ("ks.db", "ks.db.secrets"):
        shutil.copy(src / name, tmp_path / name)
    ids = json.loads((src / "ids.json").read_text())
    config = KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True)
    ks = KeyService(config)
    assert ks.store.migrated_from == 2
    who = lambda pid: SimpleNamespace(principal_id=pid)  # noqa: E731
    assert "request_key" in Flow(ks, who(ids["owner"]), who(ids["user"]), "m").release()
    with pytest.raises(AccessDenied, match="not granted"):
        Flow(ks, who(ids["owner2"]), who(ids["user2"]), "m2").release()
    assert keyservice.verify_database(str(config.db_path))["rows"] >= 8
    head = ks.store.head()
    assert KeyService(config).store.head() == head          # reopened: adopted once
    # An old grant row put back after the upgrade is still an old version.
    with sqlite3.connect(config.db_path) as con:
        con.execute("UPDATE grants SET active=1, ver=ver-1 WHERE model_id='m2'")
    with pytest.raises(IntegrityError):
        Flow(KeyService(config), who(ids["owner2"]), who(ids["user2"]), "m2").release()


def test_a_database_without_a_log_is_never_adopted_once_the_identity_has_one(tmp_path):
    """The host deletes the database and builds an old-schema one with rows of its
    choosing (the real model key row, its own enclave in the policy, a grant):
    an identity that has started a log refuses to adopt it."""
    import pytest

    from sesemi.errors import IntegrityError

    config = KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True)
    KeyService(config).store.close()                     # a deployment with its log
    assert ServiceSecrets.load_or_create(config.secrets_path).log_started
    config.db_path.unlink()
    owner, user = Identity.generate("o"), Identity.generate("u")
    _old_database(config.db_path, ServiceSecrets.load_or_create(config.secrets_path), owner, user)
    with pytest.raises(IntegrityError, match="has started a log before"):
        KeyService(config)


def test_a_row_the_schema_2_ledger_records_but_the_database_lost_is_refused(tmp_path):
    import shutil
    import sqlite3

    import pytest

    from sesemi.errors import IntegrityError

    src = Path(__file__).resolve().parents[1] / "fixtures" / "ks-schema2"
    for name in ("ks.db", "ks.db.secrets"):
        shutil.copy(src / name, tmp_path / name)
    with sqlite3.connect(tmp_path / "ks.db") as con:
        con.execute("DELETE FROM grants WHERE model_id='m2'")   # the revoked grant's tombstone
    with pytest.raises(IntegrityError, match="grants row .* was deleted"):
        KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True))
