"""The untrusted database, on both backends: every row that matters is sealed
with its table, key and version, the ledger names each row's newest version,
and the ledger's head only grows. Each test edits the database as the host
can and expects the key service to refuse (docs/keyservice.md)."""

from __future__ import annotations

import pytest

from sesemi.errors import IntegrityError, RollbackDetected

from .conftest import setup_flow


def test_flow_then_tampered_grant_row_is_refused(db):
    f = setup_flow(db.service())
    assert "request_key" in f.release()
    db.sql("UPDATE grants SET granted = granted + 1")
    # The running replica serves the version it checked, which the log names (the
    # edit changes nothing); whoever reads the row from the database refuses it.
    assert "request_key" in f.release()
    with pytest.raises(IntegrityError, match="grants row .* does not authenticate"):
        f.release(db.service())


def test_request_key_moved_to_another_user_is_refused(db):
    ks = db.service()
    f = setup_flow(ks)
    other = setup_flow(ks, "m2")
    # The host moves m's request key row to the other user (its own key at m).
    db.sql("DELETE FROM request_keys WHERE model_id='m2'")
    db.sql("UPDATE request_keys SET model_id='m2', user_id=? WHERE model_id='m'", (other.user.principal_id,))
    with pytest.raises(IntegrityError, match="request_keys row"):
        other.release()


def test_reinserted_old_grant_is_refused_after_revoke(db):
    ks = db.service()
    f = setup_flow(ks)
    old = db.sql("SELECT granted, active, ver, mac FROM grants")[0]
    ks.revoke(f.owner.principal_id, "m", f.user.principal_id)
    with pytest.raises(Exception, match="not granted"):
        f.release()
    # The host puts the old, validly MACed grant row back: an old version.
    db.sql("UPDATE grants SET granted=?, active=?, ver=?, mac=?", old)
    with pytest.raises(Exception, match="not granted"):
        f.release()          # the running replica serves the tombstone it checked: the revocation holds
    # ... and a restarted service (its snapshot and log give the versions) refuses the old row.
    with pytest.raises(IntegrityError, match="is version 1, not version 2"):
        f.release(db.service())


def test_row_inserted_by_the_host_is_refused(db):
    ks = db.service()
    f = setup_flow(ks)
    ks.revoke(f.owner.principal_id, "m", f.user.principal_id)
    row = db.sql("SELECT model_id, user_id, granted, active, ver, mac FROM grants")[0]
    db.sql("DELETE FROM grants")
    db.sql("INSERT INTO grants (model_id, user_id, granted, active, ver, mac) VALUES (?,?,?,?,?,?)",
           (row[0], row[1], row[2], 1, row[4], row[5]))
    with pytest.raises(IntegrityError, match="grants row .* does not authenticate"):
        f.release()


def test_database_restored_under_a_running_replica_is_refused(db, tmp_path):
    ks = db.service()
    f = setup_flow(ks)
    if db.backend == "sqlite":
        db.snapshot(tmp_path / "snapshot.db")
    else:
        snap = db.name + "_snap"
        ks.store.close()
        db.pg.psql(f"CREATE DATABASE {snap} TEMPLATE {db.name}")
        ks = db.service()
        f.ks = ks
    ks.revoke(f.owner.principal_id, "m", f.user.principal_id)
    if db.backend == "sqlite":
        db.restore(tmp_path / "snapshot.db")
    else:
        ks.store.close()
        db.pg.psql(f"DROP DATABASE {db.name}")
        db.pg.psql(f"ALTER DATABASE {snap} RENAME TO {db.name}")
        from keyservice.store_pg import PgStore

        fresh = PgStore(db.config.db_url, pool_size=2)
        ks.store._pool = fresh._pool
    with pytest.raises(RollbackDetected, match="behind"):
        ks.store.sync()
    with pytest.raises(RollbackDetected):  # and it stays refused
        f.release()


def test_operator_verify_finds_deleted_reordered_and_edited_leaves(db):
    """The operator's full check (`sesemi keyservice verify`, its own process: here
    its own store) walks every leaf; an owner's `audit --verify` checks its own
    entries' leaves, and the running service refuses a log that lost a leaf."""
    import keyservice

    ks = db.service()
    f = setup_flow(ks)
    f.release()
    assert keyservice.verify_database(db.url, db.secrets)["rows"] >= 4
    if db.backend == "sqlite":
        db.sql("DROP TRIGGER audit_no_update")  # the host is not bound by our triggers
        db.sql("DROP TRIGGER audit_no_delete")
    cols = "seq, leaf, ts, event, outcome, principal, model_id, user_id, mrenclave, tee, reason, row_tbl, row_key, " \
           "row_ver, row_digest, hash, mac"
    snapshot = db.sql(f"SELECT {cols} FROM audit WHERE leaf IS NOT NULL ORDER BY leaf")
    n = len(cols.split(", "))

    def restore():
        db.sql("DELETE FROM audit")
        for r in snapshot:
            db.sql(f"INSERT INTO audit ({cols}) VALUES ({', '.join('?' * n)})", tuple(r))
        keyservice.verify_database(db.url, db.secrets)

    restore()
    db.sql("DELETE FROM audit WHERE leaf=3")
    with pytest.raises(IntegrityError, match="log leaf 3 is missing"):
        keyservice.verify_database(db.url, db.secrets)
    restore()
    a, b = snapshot[4], snapshot[5]  # swap two leaves' contents, keeping their places
    db.sql("DELETE FROM audit WHERE leaf IN (4, 5)")
    db.sql(f"INSERT INTO audit ({cols}) VALUES ({', '.join('?' * n)})", (a[0], a[1], *b[2:]))
    db.sql(f"INSERT INTO audit ({cols}) VALUES ({', '.join('?' * n)})", (b[0], b[1], *a[2:]))
    with pytest.raises(IntegrityError, match="log leaf 4"):
        keyservice.verify_database(db.url, db.secrets)
    restore()
    grant_leaf = [r[1] for r in snapshot if r[3] == "grant"][0]
    db.sql("UPDATE audit SET outcome='refused' WHERE leaf=?", (grant_leaf,))
    with pytest.raises(IntegrityError, match=f"log leaf {grant_leaf}"):
        keyservice.verify_database(db.url, db.secrets)
    with pytest.raises(IntegrityError, match=f"log leaf {grant_leaf} does not authenticate"):
        ks.audit_answer(f.owner.principal_id, "m", verify=True)
    restore()
    db.sql("UPDATE log_nodes SET hash=? WHERE level=1 AND idx=0", (b"\x00" * 32,))
    with pytest.raises(IntegrityError, match=r"stored node \(1, 0\)"):
        keyservice.verify_database(db.url, db.secrets)
