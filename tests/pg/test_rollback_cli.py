"""A single-node key service (SQLite) whose database the host restores to an
older copy, then restarts: no replica remembers, but the owner's CLI does
(the state version it saw last, in $SESEMI_HOME), and its next call fails
loudly, naming both versions."""

from __future__ import annotations

import re
import sqlite3

from bundle_tool.procs import free_port, start_keyservice

from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.identity import Identity

from ..conftest import DIGITS
from ..e2e.test_cli import sesemi


def test_restored_database_is_caught_by_the_owners_next_call(tmp_path):
    port = free_port()
    ks = start_keyservice(tmp_path, port=port)
    owner = tmp_path / "owner"
    try:
        sesemi(owner, "ks", "attest", ks.url, "--insecure-sim")
        sesemi(owner, "identity", "new", "alice")
        sesemi(owner, "ks", "register", "--as", "alice")
        user = Identity.generate("bob")  # the user side through the SDK (the CLI's is tested elsewhere)
        KeyServiceClient(attest_key_service(ks.url, insecure_sim=True)).register(user)
        bob = user.principal_id
        sealed = tmp_path / "m.sealed"
        sesemi(owner, "model", "seal", str(DIGITS), "--model-id", "m", "--out", str(sealed))
        sesemi(owner, "model", "publish", "m", "--as", "alice", "--allow-mrenclave", "ab" * 32)
        sesemi(owner, "grant", "m", bob, "--as", "alice")
        db = tmp_path / "ks" / "ks.db"
        with sqlite3.connect(db) as src, sqlite3.connect(tmp_path / "backup.db") as dst:
            src.backup(dst)                                   # the host's backup, grant included
        sesemi(owner, "revoke", "m", bob, "--as", "alice")    # the owner revokes...
        # (issue 12 §3) the audit chain verifies, and an edited entry is found by --verify
        assert "ledger verified" in sesemi(owner, "ks", "audit", "--as", "alice", "--verify").stdout
        with sqlite3.connect(db) as con:
            con.execute("DROP TRIGGER audit_no_update")  # the host is not bound by our triggers
            con.execute("UPDATE audit SET outcome='refused' WHERE event='grant'")
        p = sesemi(owner, "ks", "audit", "--as", "alice", "--verify", ok=False)
        assert p.returncode != 0 and "does not authenticate" in p.stderr and "Traceback" not in p.stderr
    finally:
        ks.stop()
    with sqlite3.connect(tmp_path / "backup.db") as src, sqlite3.connect(db) as dst:
        src.backup(dst)                                       # ...and the host restores the backup
    ks = start_keyservice(tmp_path, port=port)
    try:
        p = sesemi(owner, "ks", "audit", "--as", "alice", ok=False)
        assert p.returncode != 0
        err = p.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in p.stderr
        m = re.search(r"state version (\d+), older than version (\d+)", err)
        assert m and int(m.group(1)) < int(m.group(2)), err
        assert "rolled back" in err
    finally:
        ks.stop()
