"""The PostgreSQL backend: several key-service replicas over one database,
through psycopg 3 and its connection pool.

Writers take one transaction-scoped advisory lock, so the ledger (a chain)
has one head across replicas; reads run in autocommit. The server runs on the
host, outside every enclave: it is as untrusted as a SQLite file (store.py).
The schema version lives in `schema_version`, migrated under the same lock so
that replicas starting together upgrade once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from sesemi.errors import StoreUnavailable

from . import store_schema
from .store import Conn, Store

TYPES = {"BLOB": "BYTEA", "REAL": "DOUBLE PRECISION", "INT": "BIGINT", "SERIAL": "BIGINT PRIMARY KEY"}
WRITE_LOCK = 0x5E5E_4B53  # pg_advisory_xact_lock key: one writer at a time, cluster-wide
WRITE_WAIT_S = 20          # the longest a writer waits for the lock or a statement


def _sql(sql: str) -> str:
    return sql.replace("?", "%s")


def _redact(url: str) -> str:
    """The URL without its password: it goes into errors and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://…"
    return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"


class PgStore(Store):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.where = _redact(url)
        self._pool = ConnectionPool(url, min_size=1, max_size=max(2, pool_size), open=False,
                                    timeout=connect_timeout_s, name="sesemi-keyservice",
                                    kwargs={"autocommit": True, "row_factory": dict_row,
                                            "connect_timeout": max(1, int(connect_timeout_s))})
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"cannot reach the database at {self.where} within {connect_timeout_s:g} s") \
                from None
        self._migrate()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreUnavailable(f"database at {self.where} unavailable ({type(exc).__name__})") from None

    def _migrate(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            found = int(row["version"]) if row else 0  # type: ignore[call-overload]  # dict_row rows
            for version, script in store_schema.MIGRATIONS:
                if version > found:
                    for stmt in store_schema.statements(script, TYPES):
                        conn.execute(stmt)
            if found < store_schema.LATEST:
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (%s)", (store_schema.LATEST,))
                self.migrated_from = found
        self.schema_version = store_schema.LATEST

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            # Bounded: a lock the host (or a stuck peer) never releases, or a statement
            # that never ends, is StoreUnavailable after WRITE_WAIT_S, not a hung writer
            # (the group commit's followers wait a little longer: keyservice/group_commit.py).
            conn.execute(f"SET LOCAL lock_timeout = '{WRITE_WAIT_S}s'")
            conn.execute(f"SET LOCAL statement_timeout = '{WRITE_WAIT_S}s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield Conn(lambda sql, args: conn.execute(_sql(sql), tuple(args)),
                       lambda sql, rows: conn.cursor().executemany(_sql(sql), [tuple(r) for r in rows]))

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(_sql(sql), tuple(args)).fetchall()
