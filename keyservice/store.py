"""Resource storage: SQLite in WAL mode, one connection per thread.

Every write runs in a transaction that is committed (synchronous=FULL) before
the API acknowledges it. Key material is stored only encrypted under the
service's storage key (see sealing.py); the audit table is append-only,
enforced by triggers, and never holds key material.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, public_key BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES principals(id),
    key_ct BLOB NOT NULL, policy TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    model_id TEXT NOT NULL REFERENCES models(model_id), user_id TEXT NOT NULL REFERENCES principals(id),
    granted REAL NOT NULL, PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS request_keys (
    model_id TEXT NOT NULL, user_id TEXT NOT NULL, key_ct BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS request_key_versions (
    model_id TEXT NOT NULL, user_id TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS call_seqs (principal TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS model_seals (
    model_id TEXT PRIMARY KEY REFERENCES models(model_id), seal_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS att_nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, claims TEXT NOT NULL, public_key BLOB NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, event TEXT NOT NULL, outcome TEXT NOT NULL,
    principal TEXT, model_id TEXT, user_id TEXT, mrenclave TEXT, tee TEXT, reason TEXT);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)  # runs in its own transaction

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: the write is durable when this exits."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self._conn().execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def audit(self, c: sqlite3.Connection, ts: float, event: str, outcome: str, *, principal: str | None = None,
              model_id: str | None = None, user_id: str | None = None, mrenclave: str | None = None,
              tee: str | None = None, reason: str | None = None) -> None:
        c.execute(
            "INSERT INTO audit (ts, event, outcome, principal, model_id, user_id, mrenclave, tee, reason)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (ts, event, outcome, principal, model_id, user_id, mrenclave, tee, reason),
        )

    def claim_call_seq(self, principal: str, seq: int) -> int | None:
        """Make `seq` the principal's newest signed call if it exceeds the last one
        (durably, before the call is carried out); else return the last one."""
        with self.tx() as c:
            row = c.execute("SELECT last_seq FROM call_seqs WHERE principal=?", (principal,)).fetchone()
            if row is not None and seq <= row["last_seq"]:
                return int(row["last_seq"])
            c.execute("INSERT OR REPLACE INTO call_seqs VALUES (?,?)", (principal, seq))
        return None

    # The seal a model's key is released for (set with the key, in its transaction).
    def put_seal_id(self, c: sqlite3.Connection, model_id: str, seal_id: str) -> None:
        c.execute("INSERT OR REPLACE INTO model_seals VALUES (?,?)", (model_id, seal_id))

    def seal_id(self, model_id: str) -> str | None:
        row = self.one("SELECT seal_id FROM model_seals WHERE model_id=?", model_id)
        return None if row is None else str(row["seal_id"])

    # Monotonic marks (the DCAP time floor, TCB evaluation numbers): they only rise,
    # so a restart or a replayed write cannot lower them.
    def mark(self, name: str) -> float | None:
        row = self.one("SELECT value FROM meta WHERE key=?", "mark:" + name)
        return None if row is None else float(row["value"])

    def raise_mark(self, name: str, value: float) -> float:
        seen = self.mark(name)
        if seen is not None and seen >= value:
            return seen  # the usual case, every attestation: a read, no write transaction
        with self.tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key=?", ("mark:" + name,)).fetchone()
            if row is None or float(row["value"]) < value:
                c.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", ("mark:" + name, value))
                return value
            return float(row["value"])

    def bump_request_key_version(self, c: sqlite3.Connection, model_id: str, user_id: str) -> int:
        """The version of the request key being enrolled: one above the last."""
        row = c.execute("SELECT version FROM request_key_versions WHERE model_id=? AND user_id=?",
                        (model_id, user_id)).fetchone()
        version = 1 if row is None else int(row["version"]) + 1
        c.execute("INSERT OR REPLACE INTO request_key_versions VALUES (?,?,?)", (model_id, user_id, version))
        return version

    def request_key(self, model_id: str, user_id: str) -> sqlite3.Row | None:
        """(key_ct, version) read together, so a concurrent enrolment never pairs
        one key with another's version. Keys enrolled before versions: 1."""
        return self.one("SELECT k.key_ct AS key_ct, COALESCE(v.version, 1) AS version FROM request_keys k "
                        "LEFT JOIN request_key_versions v ON v.model_id = k.model_id AND v.user_id = k.user_id "
                        "WHERE k.model_id=? AND k.user_id=?", model_id, user_id)

    _EXPIRING = {"att_nonces": "nonce", "tokens": "token_hash"}

    def trim_expiring(self, c: sqlite3.Connection, table: str, keep: int) -> None:
        """Cap a table that callers without a credential grow: beyond `keep` rows,
        drop those that expire first."""
        key = self._EXPIRING[table]
        if c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > keep:
            c.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY expires DESC "
                      "LIMIT -1 OFFSET ?)", (keep,))

    def purge_expired(self, now: float) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM att_nonces WHERE expires < ?", (now,))
            c.execute("DELETE FROM tokens WHERE expires < ?", (now,))
