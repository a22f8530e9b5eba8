"""Resource storage behind one interface, for two backends: SQLite (the
embedded default, store_sqlite.py) and PostgreSQL (store_pg.py, for several
replicas over one database).

Every write runs in a transaction that is committed before the API
acknowledges it, serialized with every other writer (BEGIN IMMEDIATE in
SQLite, an advisory lock in PostgreSQL): the ledger is a chain, and a chain
has one head.

The database is untrusted, whichever backend. Rows that matter are written
with `put` and read with `get`: each carries a version and a MAC under the
storage key (store_seal.py), and the ledger, a hash chain of MACed entries in
the audit table, records the newest version of every such row. A replica
keeps the ledger's head (the state version) and the newest version of every
row in memory, follows the ledger as other replicas extend it, and refuses a
row that is not the newest, a ledger that ends before the head it has seen
(or a peer has seen), and any entry that does not chain. See docs/keyservice.md.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from sesemi.errors import IntegrityError, RollbackDetected

from .store_seal import (AUDIT_FIELDS, GENESIS, VERSIONED, Sealer, StateVersion, normalize, row_key)

# Ledger entries that record the store's own bookkeeping, not an owner's or user's action.
INTERNAL_EVENTS = ("ledger_start", "migrate", "call", "mark", "seal_id")
_PAGE = 2000


class Conn:
    """One transaction's connection: `execute(sql, args)` with '?' placeholders,
    rows addressable by column name; `pending` collects the ledger entries
    written, applied to the in-memory head once the transaction commits."""

    def __init__(self, execute: Callable[[str, Sequence[Any]], Any]) -> None:
        self._execute = execute
        self.pending: list[tuple[int, bytes, tuple[str, str, int, bytes] | None]] = []
        self.synced = False

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._execute(sql, args)


class Store:
    """The interface; a backend supplies `_tx` (a serialized write transaction
    yielding a Conn), `_read` (an autocommit query) and its migrations."""

    dialect = "?"
    schema_version = 0
    migrated_from: int | None = None   # the version found on disk when this process upgraded it

    def __init__(self) -> None:
        self.sealer: Sealer | None = None
        self.clock: Callable[[], float] = lambda: 0.0
        self._mlock = threading.RLock()
        self._head = StateVersion(0, GENESIS)
        self._versions: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.peer_floor = 0          # the highest state version a live peer replica reported
        self.broken: str | None = None

    # --- backend primitives -------------------------------------------------
    def _tx(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- plain access (unversioned tables: nonces, tokens, the audit's reads) -
    @contextmanager
    def tx(self) -> Iterator[Conn]:
        """The write is durable when this exits."""
        with self._tx() as c:
            yield c
        self._apply(c.pending)

    def one(self, sql: str, *args: Any) -> Any:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    def all(self, sql: str, *args: Any) -> list[Any]:
        return self._read(sql, args)

    def _q(self, c: Conn | None, sql: str, args: Sequence[Any]) -> list[Any]:
        return c.execute(sql, args).fetchall() if c is not None else self._read(sql, args)

    # --- attaching the storage key: verify the ledger, build the version map -
    def attach(self, storage_key: bytes, clock: Callable[[], float]) -> StateVersion:
        self.sealer = Sealer(storage_key)
        self.clock = clock
        with self.tx() as c:
            self.sync(c)
            if self._head.seq == 0:
                self._start_ledger(c)
        return self.verify_ledger()

    def _start_ledger(self, c: Conn) -> None:
        """A fresh database, or one just upgraded from the unsealed schema: its rows
        are sealed as version 1 (trusted once, at the upgrade; docs/keyservice.md)."""
        legacy = [(t, r) for t in VERSIONED for r in c.execute(f"SELECT * FROM {t}").fetchall()]
        if legacy and self.migrated_from not in (0, 1):
            raise IntegrityError("the database holds key-service rows but no ledger: its ledger was deleted "
                                 "(refusing to trust the rows)")
        self._append(c, {"event": "ledger_start", "outcome": "ok", "reason": self.sealer.deployment})
        for table, r in legacy:
            pk, cols = VERSIONED[table]
            self._write_row(c, table, tuple(r[k] for k in pk), {k: r[k] for k in cols}, 1,
                            {"event": "migrate", "outcome": "ok"})

    # --- the ledger -----------------------------------------------------------
    def state(self) -> StateVersion:
        return self._head

    @staticmethod
    def state_of(head: Mapping[str, Any]) -> StateVersion:
        return StateVersion(int(head["seq"]), bytes.fromhex(head["hash"]))

    def _fail(self, why: str) -> None:
        self.broken = why
        raise RollbackDetected(why)

    def _check_entry(self, r: Mapping[str, Any], seq: int, prev: bytes) -> bytes:
        if int(r["seq"]) != seq or r["prev"] is None or bytes(r["prev"]) != prev:
            raise IntegrityError(f"ledger entry {seq} is missing or out of order (the audit log was edited)")
        h = Sealer.entry_hash(prev, seq, {f: r[f] for f in AUDIT_FIELDS})
        if r["hash"] is None or bytes(r["hash"]) != h or not self.sealer.entry_ok(h, r["mac"]):
            raise IntegrityError(f"ledger entry {seq} does not authenticate (the audit log was edited, or the "
                                 "database belongs to another key-service identity)")
        return h

    def sync(self, c: Conn | None = None) -> StateVersion:
        """Follow the ledger from our head to the database's; refuse a database
        that is behind what we, or a live peer, have seen."""
        if self.broken:
            raise RollbackDetected(self.broken)
        floor = self.peer_floor
        with self._mlock:
            head = self._head
            if head.seq == 0:
                rows = self._q(c, "SELECT * FROM audit WHERE hash IS NOT NULL ORDER BY seq LIMIT ?", (_PAGE,))
                if not rows:
                    if floor:
                        self._fail(f"the database holds no ledger but a peer replica has seen state version "
                                   f"{floor}: it was rolled back or replaced")
                    return head
                first = rows[0]
                if first["event"] != "ledger_start":
                    raise IntegrityError("the ledger's first entry is missing (the audit log was edited)")
                seq, prev = int(first["seq"]), GENESIS
            else:
                rows = self._q(c, "SELECT * FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?", (head.seq, _PAGE))
                if not rows or int(rows[0]["seq"]) != head.seq or bytes(rows[0]["hash"] or b"") != head.head:
                    self._fail(f"the database is behind: its ledger lacks state version {head.seq}, which this "
                               "replica has seen (the database was rolled back to an older copy, or edited)")
                rows, seq, prev = rows[1:], head.seq + 1, head.head
            full = len(rows) + (head.seq > 0) == _PAGE
            while True:
                for r in rows:
                    prev = self._check_entry(r, seq, prev)
                    self._note(r)
                    self._head = StateVersion(seq, prev)
                    seq += 1
                if not full:
                    break
                rows = self._q(c, "SELECT * FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, _PAGE))
                full = len(rows) == _PAGE
            if self._head.seq < floor:
                self._fail(f"the database is behind: its ledger ends at state version {self._head.seq}, but a "
                           f"peer replica has seen {floor} (the database was rolled back)")
            return self._head

    def _note(self, r: Mapping[str, Any]) -> None:
        if r["row_tbl"] is not None:
            self._versions[(r["row_tbl"], r["row_key"])] = (int(r["row_ver"]), bytes(r["row_digest"]))

    def verify_ledger(self) -> StateVersion:
        """Walk the whole ledger from its start (start-up, `ks audit --verify`):
        every entry chains and authenticates, and it reaches our head."""
        with self._mlock:
            rows = self._read("SELECT * FROM audit WHERE hash IS NOT NULL ORDER BY seq LIMIT ?", (_PAGE,))
            if not rows:
                raise IntegrityError("the ledger is empty (the audit log was deleted)")
            seq, prev = int(rows[0]["seq"]), GENESIS
            if rows[0]["event"] != "ledger_start":
                raise IntegrityError("the ledger's first entry is missing (the audit log was edited)")
            while rows:
                for r in rows:
                    prev = self._check_entry(r, seq, prev)
                    seq += 1
                rows = self._read("SELECT * FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, _PAGE))
            end = StateVersion(seq - 1, prev)
            if end.seq < self._head.seq:
                self._fail(f"the database is behind: its ledger ends at {end.seq}, before state version "
                           f"{self._head.seq} that this replica has seen")
        self.sync()
        return end

    def _append(self, c: Conn, entry: Mapping[str, Any]) -> tuple[int, bytes]:
        if not c.synced:
            self.sync(c)
            c.synced = True
        if c.pending:
            seq, prev = c.pending[-1][0] + 1, c.pending[-1][1]
        elif self._head.seq:
            seq, prev = self._head.seq + 1, self._head.head
        else:  # the first entry follows any entries of an unsealed (version 1) audit log
            row = c.execute("SELECT MAX(seq) AS m FROM audit").fetchone()
            seq, prev = int(row["m"] or 0) + 1, GENESIS
        full = {f: entry.get(f) for f in AUDIT_FIELDS}
        full["ts"] = float(entry.get("ts", self.clock()))
        h = Sealer.entry_hash(prev, seq, full)
        c.execute(f"INSERT INTO audit (seq, {', '.join(AUDIT_FIELDS)}, prev, hash, mac) VALUES "
                  f"({', '.join('?' * (len(AUDIT_FIELDS) + 4))})",
                  (seq, *(full[f] for f in AUDIT_FIELDS), prev, h, self.sealer.entry_mac(h)))
        ref = None if full["row_tbl"] is None else (full["row_tbl"], full["row_key"], full["row_ver"],
                                                   full["row_digest"])
        c.pending.append((seq, h, ref))
        return seq, h

    def _apply(self, pending: list) -> None:
        with self._mlock:
            for seq, h, ref in pending:
                if seq == self._head.seq + 1 or self._head.seq == 0:
                    self._head = StateVersion(seq, h)
                    if ref is not None:
                        self._versions[(ref[0], ref[1])] = (int(ref[2]), ref[3])

    def audit(self, c: Conn, ts: float, event: str, outcome: str, *, principal: str | None = None,
              model_id: str | None = None, user_id: str | None = None, mrenclave: str | None = None,
              tee: str | None = None, reason: str | None = None) -> None:
        """An audit entry that records no row write (a refusal, a release, an attestation)."""
        self._append(c, {"ts": ts, "event": event, "outcome": outcome, "principal": principal,
                         "model_id": model_id, "user_id": user_id, "mrenclave": mrenclave, "tee": tee,
                         "reason": reason})

    # --- versioned, sealed rows ----------------------------------------------
    def _check_row(self, table: str, key: tuple, row: Any) -> str | None:
        """None when `row` (or its absence) is what the ledger says; else why not."""
        expected = self._versions.get((table, row_key(key)))
        if row is None:
            return None if expected is None else f"{table} row {row_key(key)!r} was deleted"
        pk, cols = VERSIONED[table]
        if row["ver"] is None:
            return f"{table} row {row_key(key)!r} is not sealed (inserted outside the key service)"
        ver = int(row["ver"])
        digest = Sealer.row_digest(table, key, ver, normalize(cols, [row[k] for k in cols]))
        if not self.sealer.row_ok(digest, row["mac"]):
            return (f"{table} row {row_key(key)!r} does not authenticate (edited, moved from another key, or "
                    "copied from another deployment)")
        if expected is None:
            return f"{table} row {row_key(key)!r} is not in the ledger (inserted outside the key service)"
        if (ver, digest) != expected:
            return (f"{table} row {row_key(key)!r} is version {ver}, not version {expected[0]} that the "
                    "ledger records (an old row was put back)")
        return None

    def get(self, table: str, key: Sequence[Any], c: Conn | None = None) -> Any:
        """The row, checked against its MAC and the ledger's newest version, or None."""
        key = tuple(key)
        pk, _ = VERSIONED[table]
        where = " AND ".join(f"{k}=?" for k in pk)
        for attempt in (0, 1):
            rows = self._q(c, f"SELECT * FROM {table} WHERE {where}", key)
            row = rows[0] if rows else None
            why = self._check_row(table, key, row)
            if why is None:
                return row
            if attempt == 0:
                self.sync(c)  # another replica may have written it since
        raise IntegrityError(f"database tampered: {why}")

    def put(self, c: Conn, table: str, key: Sequence[Any], values: Mapping[str, Any], *, event: str,
            outcome: str = "ok", **audit: Any) -> int:
        """Write the next version of a row and its ledger entry; returns the version."""
        key = tuple(key)
        if not c.synced:
            self.sync(c)
            c.synced = True
        cur = self.get(table, key, c)
        ver = (int(cur["ver"]) if cur is not None else 0) + 1
        self._write_row(c, table, key, values, ver, {"event": event, "outcome": outcome, **audit})
        return ver

    def _write_row(self, c: Conn, table: str, key: tuple, values: Mapping[str, Any], ver: int,
                   entry: Mapping[str, Any]) -> None:
        pk, cols = VERSIONED[table]
        vals = normalize(cols, [values[k] for k in cols])
        digest = Sealer.row_digest(table, key, ver, vals)
        names = (*pk, *cols, "ver", "mac")
        updates = ", ".join(f"{n}=excluded.{n}" for n in (*cols, "ver", "mac"))
        c.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                  f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {updates}",
                  (*key, *vals, ver, self.sealer.row_mac(digest)))
        self._append(c, {**entry, "row_tbl": table, "row_key": row_key(key), "row_ver": ver,
                         "row_digest": digest})

    def verify_rows(self) -> int:
        """Check every sealed row against the ledger (`ks audit --verify`)."""
        self.sync()
        n = 0
        seen: set[tuple[str, str]] = set()
        for table, (pk, _) in VERSIONED.items():
            for r in self._read(f"SELECT * FROM {table}", ()):
                key = tuple(r[k] for k in pk)
                why = self._check_row(table, key, r)
                if why is not None:
                    raise IntegrityError(f"database tampered: {why}")
                seen.add((table, row_key(key)))
                n += 1
        missing = [k for k in self._versions if k not in seen]
        if missing:
            raise IntegrityError(f"database tampered: {missing[0][0]} row {missing[0][1]!r} was deleted")
        return n

    # --- tokens (written once: a MAC, no version) ------------------------------
    def put_token(self, c: Conn, token_hash: str, claims: str, public_key: bytes, expires: float) -> None:
        c.execute("INSERT INTO tokens (token_hash, claims, public_key, expires, mac) VALUES (?,?,?,?,?)",
                  (token_hash, claims, public_key, float(expires),
                   self.sealer.token_mac(token_hash, claims, public_key, expires)))

    def get_token(self, token_hash: str) -> Any:
        row = self.one("SELECT * FROM tokens WHERE token_hash=?", token_hash)
        if row is not None and not hmac_ok(self.sealer.token_mac(row["token_hash"], row["claims"],
                                                                  bytes(row["public_key"]), row["expires"]),
                                           row["mac"]):
            raise IntegrityError("database tampered: an attestation token row does not authenticate")
        return row

    # --- the replay helper's call sequence numbers, the attest helper's marks --
    def claim_call_seq(self, principal: str, seq: int) -> int | None:
        """Make `seq` the principal's newest signed call if it exceeds the last one
        (durably, before the call is carried out); else return the last one."""
        with self.tx() as c:
            row = self.get("call_seqs", (principal,), c)
            if row is not None and seq <= row["last_seq"]:
                return int(row["last_seq"])
            self.put(c, "call_seqs", (principal,), {"last_seq": seq}, event="call", principal=principal)
        return None

    # The seal a model's key is released for (set with the key, in its transaction).
    def put_seal_id(self, c: Conn, model_id: str, seal_id: str) -> None:
        self.put(c, "model_seals", (model_id,), {"seal_id": seal_id}, event="seal_id", model_id=model_id)

    def seal_id(self, model_id: str) -> str | None:
        row = self.get("model_seals", (model_id,))
        return None if row is None else str(row["seal_id"])

    # Monotonic marks (the DCAP time floor, TCB evaluation numbers): they only rise,
    # so a restart or a replayed write cannot lower them.
    def mark(self, name: str) -> float | None:
        row = self.get("marks", (name,))
        return None if row is None else float(row["value"])

    def raise_mark(self, name: str, value: float) -> float:
        seen = self.mark(name)
        if seen is not None and seen >= value:
            return seen  # the usual case, every attestation: a read, no write transaction
        with self.tx() as c:
            row = self.get("marks", (name,), c)
            if row is None or float(row["value"]) < value:
                self.put(c, "marks", (name,), {"value": value}, event="mark", reason=name[:200])
                return value
            return float(row["value"])

    def request_key(self, model_id: str, user_id: str) -> Any:
        """The sealed row: key_ct and its version (`kver`) in one row, so a concurrent
        enrolment never pairs one key with another's version."""
        row = self.get("request_keys", (model_id, user_id))
        return None if row is None else {"key_ct": row["key_ct"], "version": int(row["kver"])}

    _EXPIRING = {"att_nonces": "nonce", "tokens": "token_hash"}

    def trim_expiring(self, c: Conn, table: str, keep: int) -> None:
        """Cap a table that callers without a credential grow: beyond `keep` rows,
        drop those that expire first."""
        key = self._EXPIRING[table]
        if c.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"] > keep:
            # LIMIT with a huge bound: both engines take it (SQLite has no LIMIT ALL, PostgreSQL no LIMIT -1).
            c.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY expires DESC "
                      "LIMIT ? OFFSET ?)", (1 << 62, keep))

    def purge_expired(self, now: float) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM att_nonces WHERE expires < ?", (now,))
            c.execute("DELETE FROM tokens WHERE expires < ?", (now,))


def hmac_ok(expected: bytes, got: Any) -> bool:
    import hmac

    return got is not None and hmac.compare_digest(expected, bytes(got))


def open_store(db: str, *, pool_size: int = 10) -> Store:
    """`db`: a SQLite file path, or a postgresql:// URL."""
    if db.startswith(("postgresql://", "postgres://")):
        from .store_pg import PgStore

        return PgStore(db, pool_size=pool_size)
    from .store_sqlite import SqliteStore

    return SqliteStore(db)
