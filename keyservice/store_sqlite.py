"""The SQLite backend (the embedded default): WAL mode, one connection per
thread, synchronous=FULL, writers serialized by BEGIN IMMEDIATE. The schema
version is `PRAGMA user_version`."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import store_schema
from .store import Conn, Store

TYPES = {"BLOB": "BLOB", "REAL": "REAL", "INT": "INTEGER", "SERIAL": "INTEGER PRIMARY KEY AUTOINCREMENT"}
# Not a defence against the host (it edits the file directly; the ledger catches that),
# but a mistake in our own code cannot rewrite history either.
TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

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

    def _migrate(self) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            found = c.execute("PRAGMA user_version").fetchone()[0]
            if found == 0 and c.execute("SELECT 1 FROM sqlite_master WHERE name='models'").fetchone():
                found = 1  # the schema from before versioning
            for version, script in store_schema.MIGRATIONS:
                if version > found:
                    for stmt in store_schema.statements(script, TYPES):
                        c.execute(stmt)
                    if version == 1:
                        for stmt in [s.strip() + " END" for s in TRIGGERS.split("END;") if s.strip()]:
                            c.execute(stmt)
            if found < store_schema.LATEST:
                c.execute(f"PRAGMA user_version={store_schema.LATEST}")
                self.migrated_from = found
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        self.schema_version = store_schema.LATEST

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        raw = self._conn()
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield Conn(raw.execute, raw.executemany)
        except BaseException:
            raw.execute("ROLLBACK")
            raise
        raw.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return self._conn().execute(sql, tuple(args)).fetchall()
