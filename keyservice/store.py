"""Resource storage behind one interface, for two backends: SQLite (the
embedded default, store_sqlite.py) and PostgreSQL (store_pg.py, for several
replicas over one database).

Every write runs in a transaction that is committed before the API
acknowledges it, serialized with every other writer (BEGIN IMMEDIATE in
SQLite, an advisory lock in PostgreSQL): the log is append-only, and its
leaves are numbered.

The database is untrusted, whichever backend. Rows that matter are written
with `put` and read with `get`: each carries a version and a MAC under the
storage key (store_seal.py), and the log, an RFC 9162 Merkle tree whose
leaves are the audit entries (sesemi/ks_log.py), records the newest version
of every such row. A replica keeps the tree's right frontier (its head) and
the newest version of every row in memory, follows the log as other
replicas extend it, and refuses a row that is not the newest, a log that
lacks a leaf it has seen, and a log that does not extend a checkpoint a peer
has seen. Start-up resumes from a sealed snapshot of that state instead of
walking the whole history. See docs/keyservice.md.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from sesemi import checkpoint, ks_log, merkle
from sesemi.encoding import lp
from sesemi.errors import IntegrityError, RollbackDetected
from sesemi.merkle import Frontier

from .store_seal import (AUDIT_FIELDS, EMPTY_HEAD, GENESIS, VERSIONED, Sealer, TreeHead, normalize, row_key)

# Log entries that record the store's own bookkeeping, not an owner's or user's action.
INTERNAL_EVENTS = ("ledger_start", "migrate", "call", "mark", "seal_id")
_PAGE = 2000
SNAPSHOT_EVERY = 10_000      # leaves between sealed snapshots: what a start-up re-reads at most
_NODE_CACHE = 1 << 16        # perfect subtrees this replica computed itself, kept for proofs
_MAX_SEQ = 1 << 62           # the audit table's row ids (not authenticated: a host may push them up)
# Checked rows kept, each valid while the log names its version (about 1 KiB a row),
# and MAC-checked token rows kept until they expire (about 2.5 KiB: a hybrid public
# key each); least recently used dropped first. occlum_instance/sizing.py counts both.
_ROW_CACHE = 1 << 15
_TOKEN_CACHE = 1 << 13

RowRef = tuple[str, str, int, bytes]


class Conn:
    """One transaction's connection: `execute(sql, args)` with '?' placeholders,
    rows addressable by column name. `frontier` is the tree as this
    transaction extends it; `leaves` and `nodes` what it wrote, applied to the
    in-memory head once the transaction commits."""

    def __init__(self, execute: Callable[[str, Sequence[Any]], Any],
                 executemany: Callable[[str, Sequence[Sequence[Any]]], Any] | None = None) -> None:
        self._execute = execute
        self._executemany = executemany
        self.frontier: Frontier | None = None
        self.next_seq = 0
        self.leaves: list[tuple[int, bytes, RowRef | None]] = []
        self.nodes: list[tuple[int, int, bytes]] = []
        self.synced = False

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._executemany is not None:
            self._executemany(sql, rows)
        else:
            for r in rows:
                self._execute(sql, r)


class StoreStats:
    """What operators and the capacity model read (keyservice/metrics.py)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.write_txs = 0
        self.lock_held_s = 0.0        # summed time inside the serialized writer section
        self.lock_cpu_s = 0.0         # the CPU time of the threads that held it, meanwhile
        self.leaves = 0
        self.syncs = 0                # follows of the log that queried the database
        self.reads = 0                # autocommit queries
        self.row_cache_hits = 0

    def add(self, **kw: float) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class Store:
    """The interface; a backend supplies `_tx` (a serialized write transaction
    yielding a Conn), `_read` (an autocommit query) and its migrations."""

    dialect = "?"
    schema_version = 0
    migrated_from: int | None = None   # the version found on disk when this process upgraded it

    def __init__(self) -> None:
        self._sealer: Sealer | None = None
        self.clock: Callable[[], float] = lambda: 0.0
        self._mlock = threading.RLock()
        self._frontier = Frontier()
        self._head = EMPTY_HEAD
        self._last_leaf = b""
        self._versions: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._nodes: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._snapshot_size = 0
        self.peer_floor: TreeHead | None = None   # the largest checkpoint a live peer replica reported
        self._floor_checked: TreeHead | None = None
        self.broken: str | None = None
        self.leaves_read = 0          # leaves followed from the database by this process
        self.stats = StoreStats()
        # Rows read through `get`, kept with their (version, digest): one is served
        # from memory while the log's version map names exactly that version.
        self._rows: OrderedDict[tuple[str, tuple], tuple[tuple[int, bytes], dict[str, Any]]] = OrderedDict()
        self._tokens: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._sync_lock = threading.Lock()
        self._sync_started = 0.0

    @property
    def sealer(self) -> Sealer:
        """The MAC keys: there once the storage key is attached (`attach`)."""
        if self._sealer is None:
            raise IntegrityError("the store has no storage key attached")
        return self._sealer

    @sealer.setter
    def sealer(self, value: Sealer) -> None:
        self._sealer = value

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
            t0, cpu0 = time.perf_counter(), time.thread_time()   # the writer lock is held from here to the commit
            yield c
            self._flush_nodes(c)
        self.stats.add(write_txs=1, lock_held_s=time.perf_counter() - t0, lock_cpu_s=time.thread_time() - cpu0,
                       leaves=len(c.leaves))
        self._apply(c)

    def append_entries(self, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Several log entries in one transaction (group commit): their leaf indices.
        Everything that does not need the leaf index is done before the lock."""
        full = [self._full_entry(e) for e in entries]
        tails = [ks_log.entry_tail(f) for f in full]
        with self.tx() as c:
            return self._append_many(c, full, tails)

    def _one(self, sql: str, *args: Any) -> Any:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    def _all(self, sql: str, *args: Any) -> list[Any]:
        return self._read(sql, args)

    def _q(self, c: Conn | None, sql: str, args: Sequence[Any]) -> list[Any]:
        if c is not None:
            return c.execute(sql, args).fetchall()
        self.stats.add(reads=1)
        return self._read(sql, args)

    # --- attaching the storage key: resume the log, build the version map ------
    def attach(self, storage_key: bytes, clock: Callable[[], float], adopt_legacy: bool = False) -> TreeHead:
        """Resume from the newest sealed snapshot (or the log's start), follow the
        leaves after it, and start a log in a fresh database. `adopt_legacy`: the
        service identity has never started a log, so rows of an older schema
        found here are the upgrade's to adopt."""
        self.sealer = Sealer(storage_key)
        self.clock = clock
        self._resume()
        with self.tx() as c:
            self.sync(c)
            if self._head.size == 0:
                self._start_log(c, adopt_legacy)
        head = self.sync()
        self.snapshot()
        return head

    def _resume(self) -> None:
        rows = self._read("SELECT * FROM log_snapshots ORDER BY size DESC LIMIT 1", ())
        if not rows:
            return
        r = rows[0]
        frontier, last, versions = bytes(r["frontier"]), bytes(r["last_leaf"]), bytes(r["versions"])
        if not hmac_ok(self.sealer.snapshot_mac(int(r["size"]), frontier, last, versions), r["mac"]):
            raise IntegrityError("the log's snapshot does not authenticate (edited, or the database belongs to "
                                 "another key-service identity)")
        with self._mlock:
            self._frontier = Frontier.from_bytes(frontier)
            if self._frontier.size != int(r["size"]):
                raise IntegrityError("the log's snapshot is inconsistent")
            self._last_leaf = last
            self._versions = _decode_versions(versions)
            self._set_head()
            self._snapshot_size = self._frontier.size

    def _start_log(self, c: Conn, adopt_legacy: bool) -> None:
        """A fresh database, or one just upgraded: rows of an unsealed (schema 1)
        database are sealed as version 1, and rows of a schema-2 database are
        adopted at the versions its checked hash chain records (trusted once, at
        the upgrade; docs/keyservice.md)."""
        legacy = [(t, r) for t in VERSIONED for r in c.execute(f"SELECT * FROM {t}").fetchall()]
        chain = self.migrated_from == 2 and c.execute(
            "SELECT 1 FROM audit WHERE hash IS NOT NULL AND leaf IS NULL LIMIT 1").fetchone() is not None
        if legacy and not adopt_legacy:
            raise IntegrityError("the database holds key-service rows but no log, and this service identity has "
                                 "started a log before: the database was replaced by one the host built (refusing "
                                 "to trust its rows; restore the database that belongs to this service)")
        if legacy and not chain and self.migrated_from not in (0, 1):
            raise IntegrityError("the database holds key-service rows but no log: its log was deleted "
                                 "(refusing to trust the rows)")
        adopted = self._adopt_chain(c) if chain else None
        self._append(c, {"event": "ledger_start", "outcome": "ok", "reason": self.sealer.deployment})
        for table, r in legacy:
            pk, cols = VERSIONED[table]
            key = tuple(r[k] for k in pk)
            if adopted is None:
                self._write_row(c, table, key, {k: r[k] for k in cols}, 1, {"event": "migrate", "outcome": "ok"})
                continue
            ver = int(r["ver"]) if r["ver"] is not None else 0
            digest = Sealer.row_digest(table, key, ver, normalize(cols, [r[k] for k in cols]))
            if adopted.get((table, row_key(key))) != (ver, digest) or not self.sealer.row_ok(digest, r["mac"]):
                raise IntegrityError(f"database tampered: {table} row {row_key(key)!r} is not the version its "
                                     "schema-2 ledger records")
            self._append(c, {"event": "migrate", "outcome": "ok", "row_tbl": table, "row_key": row_key(key),
                             "row_ver": ver, "row_digest": digest})
        if adopted is not None:
            found = {(t, row_key(tuple(r[k] for k in VERSIONED[t][0]))) for t, r in legacy}
            missing = sorted(set(adopted) - found)
            if missing:
                raise IntegrityError(f"database tampered: {missing[0][0]} row {missing[0][1]!r}, which its schema-2 "
                                     "ledger records, was deleted")

    def _adopt_chain(self, c: Conn) -> dict[tuple[str, str], tuple[int, bytes]]:
        """Check a schema-2 ledger (a MACed hash chain) once, and return the row
        versions it records."""
        versions: dict[tuple[str, str], tuple[int, bytes]] = {}
        rows = c.execute("SELECT * FROM audit WHERE hash IS NOT NULL ORDER BY seq").fetchall()
        if not rows or rows[0]["event"] != "ledger_start":
            raise IntegrityError("the schema-2 ledger's first entry is missing (the audit log was edited)")
        seq, prev = int(rows[0]["seq"]), GENESIS
        for r in rows:
            h = Sealer.entry_hash_v2(prev, seq, {f: r[f] for f in AUDIT_FIELDS})
            if int(r["seq"]) != seq or bytes(r["prev"] or b"") != prev or bytes(r["hash"]) != h \
                    or not self.sealer.entry_ok(h, r["mac"]):
                raise IntegrityError(f"schema-2 ledger entry {seq} does not authenticate (the audit log was edited)")
            if r["row_tbl"] is not None:
                versions[(r["row_tbl"], r["row_key"])] = (int(r["row_ver"]), bytes(r["row_digest"]))
            seq, prev = seq + 1, h
        return versions

    # --- the log ------------------------------------------------------------------
    def head(self) -> TreeHead:
        return self._head

    def _set_head(self) -> None:
        self._head = TreeHead(self._frontier.size, self._frontier.root())

    def _fail(self, why: str) -> None:
        self.broken = why
        raise RollbackDetected(why)

    def refuse(self, why: str) -> None:
        """Stop serving for good (a fork seen by a peer check): every request then fails with `why`."""
        self.broken = self.broken or why

    def _cache(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        for level, idx, h in nodes:
            self._nodes[(level, idx)] = h
        while len(self._nodes) > _NODE_CACHE:
            self._nodes.popitem(last=False)

    def _follow(self, r: Mapping[str, Any]) -> None:
        """Extend the in-memory tree by one leaf read from the database."""
        i = self._frontier.size
        if r["leaf"] is None or int(r["leaf"]) != i:
            raise IntegrityError(f"log leaf {i} is missing or out of order (the audit log was edited)")
        h = ks_log.leaf_of(i, {f: r[f] for f in AUDIT_FIELDS})
        if r["hash"] is None or bytes(r["hash"]) != h or not self.sealer.entry_ok(h, r["mac"]):
            raise IntegrityError(f"log leaf {i} does not authenticate (the audit log was edited, or the "
                                 "database belongs to another key-service identity)")
        self._cache(self._frontier.append(h))
        self._last_leaf = h
        if r["row_tbl"] is not None:
            self._versions[(r["row_tbl"], r["row_key"])] = (int(r["row_ver"]), bytes(r["row_digest"]))
        self.leaves_read += 1

    def sync_after(self, arrived: float, known: int = 0, max_age_s: float = 0.0) -> TreeHead:
        """Follow the log unless a follow that began after `arrived - max_age_s`
        (time.monotonic()) has completed and the caller holds no larger tree
        (`known`): an answer then reflects every write committed `max_age_s`
        before its request and every write its caller has seen. Requests that
        arrive while a follow runs wait for it (or for the next one): a follow
        that is still running, or that failed, vouches for nothing."""
        if self._fresh(arrived, known, max_age_s):
            return self._head
        with self._sync_lock:
            if self._fresh(arrived, known, max_age_s):
                return self._head
            started = time.monotonic()
            head = self.sync()
            self._sync_started = started   # set only once the follow succeeded
            return head

    def _fresh(self, arrived: float, known: int, max_age_s: float) -> bool:
        return not self.broken and known <= self._head.size and self._sync_started > arrived - max_age_s

    def sync(self, c: Conn | None = None) -> TreeHead:
        """Follow the log from our head to the database's; refuse a database that
        lacks a leaf we have seen, or does not extend a peer's checkpoint."""
        if self.broken:
            raise RollbackDetected(self.broken)
        with self._mlock:
            size = self._frontier.size
            rows = self._q(c, "SELECT * FROM audit WHERE leaf >= ? ORDER BY leaf LIMIT ?", (max(size - 1, 0), _PAGE))
            self.stats.add(syncs=1)
            if size:
                if not rows or int(rows[0]["leaf"]) != size - 1 or bytes(rows[0]["hash"] or b"") != self._last_leaf:
                    self._fail(f"the database is behind: its log lacks leaf {size - 1} as this replica saw it "
                               f"(tree size {size}): it was rolled back to an older copy, replaced, or edited")
                rows = rows[1:]
            full = len(rows) + (size > 0) == _PAGE
            before = size
            while True:
                for r in rows:
                    self._follow(r)
                if not full:
                    break
                rows = self._q(c, "SELECT * FROM audit WHERE leaf >= ? ORDER BY leaf LIMIT ?",
                               (self._frontier.size, _PAGE))
                full = len(rows) == _PAGE
            if self._frontier.size != before:
                self._set_head()
            self._check_floor()
            return self._head

    def _check_floor(self) -> None:
        """A peer's checkpoint is one we must extend: same size, same root; larger,
        by a consistency proof (docs/keyservice.md, "Peers")."""
        floor = self.peer_floor
        if floor is None or floor == self._floor_checked:
            return
        head = self._head
        if head.size < floor.size:
            self._fail(f"the database is behind: its log ends at tree size {head.size}, but a peer replica has "
                       f"seen size {floor.size} (the database was rolled back)")
        try:
            if head.size == floor.size:
                if head.root != floor.root:
                    raise merkle.ProofError("equal sizes, other roots")
            else:
                merkle.verify_consistency(floor.size, head.size, floor.root, head.root,
                                          self.consistency_proof(floor.size, head.size))
        except LogNodesEdited as exc:
            self._fail(str(exc))
        except (merkle.ProofError, IntegrityError) as exc:
            self._fail(f"the database is a fork: its log (tree {checkpoint.describe(head.size, head.root)}) does not "
                       f"extend the checkpoint a peer replica has seen ({checkpoint.describe(floor.size, floor.root)}): "
                       f"{exc}")
        self._floor_checked = floor

    def observe_peer(self, head: TreeHead) -> None:
        """A peer's verified checkpoint: the largest becomes the floor."""
        with self._mlock:
            if self.peer_floor is None or head.size > self.peer_floor.size:
                self.peer_floor = head
            elif head.size == self.peer_floor.size and head.root != self.peer_floor.root:
                self._fail(f"two peer replicas report different logs of tree size {head.size}: a fork")

    def _append(self, c: Conn, entry: Mapping[str, Any]) -> int:
        """Append one leaf in this transaction; returns its index."""
        return self._append_many(c, [self._full_entry(entry)], [None])[0]

    def _full_entry(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        full = {f: entry.get(f) for f in AUDIT_FIELDS}
        full["ts"] = float(entry.get("ts", self.clock()))
        return full

    _INSERT_LEAF = (f"INSERT INTO audit (seq, leaf, {', '.join(AUDIT_FIELDS)}, hash, mac) VALUES "
                    f"({', '.join('?' * (len(AUDIT_FIELDS) + 4))})")

    def _append_many(self, c: Conn, full: Sequence[dict[str, Any]], tails: Sequence[bytes | None]) -> list[int]:
        """The writer section's own work per leaf: its index, hash and MAC, one insert."""
        if not c.synced:
            self.sync(c)
            c.synced = True
        if c.frontier is None:
            with self._mlock:
                c.frontier = self._frontier.copy()
            # The row id from the table itself (one index probe per transaction, not per
            # leaf): the host may add rows outside the log, and an id learnt from leaves
            # alone would then collide on every write, across restarts.
            c.next_seq = int(c.execute("SELECT MAX(seq) AS m FROM audit").fetchone()["m"] or 0) + 1
            if c.next_seq + len(full) >= _MAX_SEQ:
                raise IntegrityError("the audit table's row ids were pushed to their limit (the database was "
                                     "edited)")
        rows, out = [], []
        for entry, tail in zip(full, tails):
            i = c.frontier.size
            h = ks_log.leaf_of(i, entry, tail)
            rows.append((c.next_seq, i, *(entry[f] for f in AUDIT_FIELDS), h, self.sealer.entry_mac(h)))
            c.next_seq += 1
            c.nodes.extend(c.frontier.append(h))
            ref = None if entry["row_tbl"] is None else (entry["row_tbl"], entry["row_key"], entry["row_ver"],
                                                         entry["row_digest"])
            c.leaves.append((i, h, ref))
            out.append(i)
        c.executemany(self._INSERT_LEAF, rows)
        return out

    def _flush_nodes(self, c: Conn) -> None:
        """The perfect subtrees this transaction completed, in one statement per 300."""
        for at in range(0, len(c.nodes), 300):
            chunk = c.nodes[at:at + 300]
            c.execute("INSERT INTO log_nodes (level, idx, hash) VALUES " + ", ".join(["(?,?,?)"] * len(chunk))
                      + " ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash",
                      [v for node in chunk for v in node])

    def _apply(self, c: Conn) -> None:
        if not c.leaves:
            return
        with self._mlock:
            if self._frontier.size != c.leaves[0][0]:
                return  # another thread followed these leaves from the database already
            assert c.frontier is not None  # set by the first append of the transaction
            self._frontier = c.frontier
            self._last_leaf = c.leaves[-1][1]
            for _i, _h, ref in c.leaves:
                if ref is not None:
                    self._versions[(ref[0], ref[1])] = (int(ref[2]), ref[3])
            self._cache(c.nodes)
            self._set_head()

    def audit(self, c: Conn, ts: float, event: str, outcome: str, *, principal: str | None = None,
              model_id: str | None = None, user_id: str | None = None, mrenclave: str | None = None,
              tee: str | None = None, reason: str | None = None) -> int:
        """A log entry that records no row write (a refusal, a release, an attestation)."""
        return self._append(c, {"ts": ts, "event": event, "outcome": outcome, "principal": principal,
                                "model_id": model_id, "user_id": user_id, "mrenclave": mrenclave, "tee": tee,
                                "reason": reason})

    # --- proofs ------------------------------------------------------------------------
    def _get_nodes(self, needed: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._mlock:
            got = {k: self._nodes[k] for k in needed if k in self._nodes}
        missing = [k for k in needed if k not in got]
        for at in range(0, len(missing), 200):
            chunk = missing[at:at + 200]
            rows = self._read("SELECT level, idx, hash FROM log_nodes WHERE "
                              + " OR ".join(["(level=? AND idx=?)"] * len(chunk)), [v for k in chunk for v in k])
            got.update({(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in rows})
        if len(got) != len(needed):
            raise IntegrityError("the log's stored nodes are incomplete (the database was edited)")
        return got

    def _proof(self, build: Callable[[merkle.NodeGetter], list[bytes]]) -> list[bytes]:
        nodes = self._get_nodes(merkle.nodes_needed(build))
        return build(lambda level, idx: nodes[(level, idx)])

    def _proof_from_memory(self, build: Callable[[merkle.NodeGetter], list[bytes]]) -> list[bytes] | None:
        """The proof from nodes this replica computed itself (trusted: no check
        needed), or None when one must come from the database."""
        class _Miss(Exception):
            pass

        def get(level: int, idx: int) -> bytes:
            h = self._nodes.get((level, idx))
            if h is None:
                raise _Miss
            return h

        try:
            return build(get)
        except _Miss:
            return None

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """From the tree of `first` leaves to the tree of `second` (≤ our size).
        A proof to our own head is checked before it is used: every element
        folds into the second root, so an edited stored node is found here
        (LogNodesEdited), not reported by a witness as a fork."""
        head = self._head
        if not 0 <= first <= second <= head.size:
            raise IntegrityError(f"no consistency proof from {first} to {second}: this log has "
                                 f"{head.size} leaves")
        if 0 < first < second and second == head.size:
            mine = self._proof_from_memory(lambda get: merkle.consistency_proof(first, second, get))
            if mine is not None:
                return mine
            nodes = self._get_nodes(merkle.nodes_needed(
                lambda get: (merkle.consistency_proof(first, second, get), merkle.subtree_hash(0, first, get))))
            get = lambda level, idx: nodes[(level, idx)]  # noqa: E731
            proof = merkle.consistency_proof(first, second, get)
            try:
                _, root = merkle.roots_from_consistency(first, second, merkle.subtree_hash(0, first, get), proof)
            except merkle.ProofError:
                root = b""
            if root != head.root:
                raise LogNodesEdited("the log's stored nodes do not reproduce this replica's root: the database "
                                     "was edited (the operator's `sesemi keyservice verify` names the node)")
            return proof
        return self._proof(lambda get: merkle.consistency_proof(first, second, get))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self._head.size:
            raise IntegrityError(f"no inclusion proof of leaf {index} in a tree of {size}")

        def build(get: merkle.NodeGetter) -> list[bytes]:
            return merkle.inclusion_proof(index, size, get)

        return self._proof_from_memory(build) or self._proof(build)

    def leaf_entry(self, index: int) -> dict[str, Any]:
        """A leaf's entry, checked against its hash and MAC."""
        r = self._one("SELECT * FROM audit WHERE leaf=?", index)
        entry = None if r is None else {f: r[f] for f in AUDIT_FIELDS}
        if entry is None or not self.sealer.entry_ok(ks_log.leaf_of(index, entry), r["mac"]) \
                or bytes(r["hash"]) != ks_log.leaf_of(index, entry):
            raise IntegrityError(f"log leaf {index} is missing or does not authenticate")
        entry["row_digest"] = bytes(entry["row_digest"]) if entry["row_digest"] is not None else None
        return entry

    # --- snapshots: what a start-up resumes from ---------------------------------------
    def snapshot(self, every: int = SNAPSHOT_EVERY) -> bool:
        """Seal the frontier and the row-version map once `every` leaves have been
        added since the last snapshot; the two newest are kept."""
        with self._mlock:
            size = self._frontier.size
            if size == 0 or size - self._snapshot_size < every:
                return False
            frontier, last = self._frontier.to_bytes(), self._last_leaf
            versions = _encode_versions(self._versions)
        with self.tx() as c:
            c.execute("INSERT INTO log_snapshots (size, frontier, last_leaf, versions, mac) VALUES (?,?,?,?,?) "
                      "ON CONFLICT (size) DO NOTHING",
                      (size, frontier, last, versions, self.sealer.snapshot_mac(size, frontier, last, versions)))
            c.execute("DELETE FROM log_snapshots WHERE size < ?", (self._snapshot_size,))
        self._snapshot_size = size
        return True

    # --- the operator's full check (`sesemi keyservice verify`) -------------------------
    def verify_log(self) -> TreeHead:
        """Walk every leaf from the start, rebuild the tree and compare every stored
        node; never takes the lock requests need (an operator runs it in its own
        process). Returns the head it found."""
        frontier = Frontier()
        versions: dict[tuple[str, str], tuple[int, bytes]] = {}
        while True:
            rows = self._read("SELECT * FROM audit WHERE leaf >= ? ORDER BY leaf LIMIT ?", (frontier.size, _PAGE))
            if not rows:
                break
            done: list[tuple[int, int, bytes]] = []
            for r in rows:
                i = frontier.size
                h = ks_log.leaf_of(i, {f: r[f] for f in AUDIT_FIELDS})
                if int(r["leaf"]) != i or bytes(r["hash"] or b"") != h or not self.sealer.entry_ok(h, r["mac"]):
                    raise IntegrityError(f"log leaf {i} is missing, out of order or does not authenticate")
                done.extend(frontier.append(h))
                if r["row_tbl"] is not None:
                    versions[(r["row_tbl"], r["row_key"])] = (int(r["row_ver"]), bytes(r["row_digest"]))
            stored = self._get_nodes([(lv, ix) for lv, ix, _ in done])
            for lv, ix, h in done:
                if stored[(lv, ix)] != h:
                    raise IntegrityError(f"the log's stored node ({lv}, {ix}) is not the hash of its leaves")
        self.checked_versions = versions
        return TreeHead(frontier.size, frontier.root())

    # --- versioned, sealed rows ----------------------------------------------
    def _check_row(self, table: str, key: tuple, row: Any,
                   versions: Mapping[tuple[str, str], tuple[int, bytes]] | None = None) -> str | None:
        """None when `row` (or its absence) is what the log says; else why not."""
        expected = (self._versions if versions is None else versions).get((table, row_key(key)))
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
        """The row, checked against its MAC and the log's newest version, or None.
        Outside a transaction it comes from memory when the log names the very
        version kept (what this replica has followed; docs/keyservice.md,
        "Throughput"), and a row the log does not name is absent without a read."""
        key = tuple(key)
        if c is None:
            with self._mlock:
                expected = self._versions.get((table, row_key(key)))
                hit = self._rows.get((table, key))
            if expected is None and self._sealer is not None:
                self.stats.add(row_cache_hits=1)
                return None
            if hit is not None and hit[0] == expected:
                with self._mlock:
                    if (table, key) in self._rows:
                        self._rows.move_to_end((table, key))
                self.stats.add(row_cache_hits=1)
                return hit[1]
        pk, _ = VERSIONED[table]
        where = " AND ".join(f"{k}=?" for k in pk)
        for attempt in (0, 1):
            rows = self._q(c, f"SELECT * FROM {table} WHERE {where}", key)
            row = rows[0] if rows else None
            why = self._check_row(table, key, row)
            if why is None:
                if row is not None and c is None:
                    self._keep_row(table, key, row)
                return row
            if attempt == 0:
                self.sync(c)  # another replica may have written it since
        raise IntegrityError(f"database tampered: {why}")

    def _keep_row(self, table: str, key: tuple, row: Any) -> None:
        pk, cols = VERSIONED[table]
        ver = int(row["ver"])
        digest = Sealer.row_digest(table, key, ver, normalize(cols, [row[k] for k in cols]))
        with self._mlock:
            self._rows[(table, key)] = ((ver, digest), dict(row))
            while len(self._rows) > _ROW_CACHE:
                self._rows.popitem(last=False)

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

    def verify_rows(self, versions: Mapping[tuple[str, str], tuple[int, bytes]] | None = None) -> int:
        """Check every sealed row against the log's newest versions (the operator's
        `sesemi keyservice verify`)."""
        n = 0
        seen: set[tuple[str, str]] = set()
        for table, (pk, _) in VERSIONED.items():
            for r in self._read(f"SELECT * FROM {table}", ()):
                key = tuple(r[k] for k in pk)
                why = self._check_row(table, key, r, versions)
                if why is not None:
                    raise IntegrityError(f"database tampered: {why}")
                seen.add((table, row_key(key)))
                n += 1
        missing = [k for k in (self._versions if versions is None else versions) if k not in seen]
        if missing:
            raise IntegrityError(f"database tampered: {missing[0][0]} row {missing[0][1]!r} was deleted")
        return n

    # --- named reads and writes for the service (it runs no SQL itself) ------------
    def holds_keys(self) -> bool:
        """Any model or request key stored (then new service secrets would orphan them)."""
        return self._one("SELECT 1 AS x FROM models UNION ALL SELECT 1 AS x FROM request_keys LIMIT 1") is not None

    def granted_users(self, model_id: str) -> list[str]:
        """Users with an active grant on the model, each grant row checked."""
        ids = [r["user_id"] for r in self._all("SELECT user_id FROM grants WHERE model_id=? ORDER BY user_id",
                                                 model_id)]
        return [u for u in ids if self.is_granted(model_id, u)]

    def is_granted(self, model_id: str, user_id: str) -> bool:
        row = self.get("grants", (model_id, user_id))
        return row is not None and bool(row["active"])

    def grant_listing(self, model_id: str, after: str, limit: int) -> list[str]:
        """User ids with a grant row on the model (any state, unchecked: the
        caller reads each through `is_granted`), in order, after `after`."""
        return [r["user_id"] for r in self._all("SELECT user_id FROM grants WHERE model_id=? AND user_id > ? "
                                                "ORDER BY user_id LIMIT ?", model_id, after, limit)]

    def users_changed(self, model_id: str, since: int, events: Sequence[str], limit: int) -> list[str]:
        """User ids named by log leaves `since` and later, of these events, on the
        model (unchecked: a roster's change set re-reads each user's rows)."""
        marks = ", ".join("?" * len(events))
        return [r["user_id"] for r in self._all(
            f"SELECT DISTINCT user_id FROM audit WHERE model_id=? AND leaf >= ? AND user_id IS NOT NULL "
            f"AND event IN ({marks}) LIMIT ?", model_id, since, *events, limit)]

    def live_tokens(self) -> list[Any]:
        """(token_hash, claims, expires) of every stored token (the token quota's book at start)."""
        return self._all("SELECT token_hash, claims, expires FROM tokens")

    def drop_token(self, c: Conn, token_hash: str) -> None:
        c.execute("DELETE FROM tokens WHERE token_hash=?", (token_hash,))
        self._forget_tokens(token_hash)

    def user_standing(self, user_id: str) -> tuple[set[str], set[str]]:
        """(models the user is granted, models it holds a request key for), each row checked."""
        granted = {r["model_id"] for r in self._all("SELECT model_id FROM grants WHERE user_id=?", user_id)
                   if self.is_granted(r["model_id"], user_id)}
        keyed = {r["model_id"] for r in self._all("SELECT model_id FROM request_keys WHERE user_id=?", user_id)
                 if self.get("request_keys", (r["model_id"], user_id)) is not None}
        return granted, keyed

    def audit_entries(self, *, model_id: str | None = None, visible_to: str | None = None,
                      limit: int = 1000, before: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` leaves below `before` that are not bookkeeping, of one
        model or visible to one principal (theirs, or of their models), oldest
        first, ordered by leaf index (the only order the log authenticates); each
        is checked against its hash and MAC. Entries of an upgraded database's
        older audit trail are not leaves and are not shown."""
        internal = ", ".join(f"'{e}'" for e in INTERNAL_EVENTS)
        below = self._head.size if before is None else min(before, self._head.size)
        if model_id is not None:
            rows = self._all(f"SELECT * FROM audit WHERE leaf IS NOT NULL AND leaf < ? AND model_id=? AND event "
                             f"NOT IN ({internal}) ORDER BY leaf DESC LIMIT ?", below, model_id, limit)
        else:
            rows = self._all(f"SELECT * FROM audit WHERE leaf IS NOT NULL AND leaf < ? AND (principal=? OR "
                             f"user_id=? OR model_id IN (SELECT model_id FROM models WHERE owner=?)) AND event NOT "
                             f"IN ({internal}) ORDER BY leaf DESC LIMIT ?", below, visible_to, visible_to,
                             visible_to, limit)
        out: list[dict[str, Any]] = []
        for r in reversed(rows):
            i = int(r["leaf"])
            entry = {f: r[f] for f in AUDIT_FIELDS}
            h = ks_log.leaf_of(i, entry)
            if i >= self._head.size or bytes(r["hash"] or b"") != h or not self.sealer.entry_ok(h, r["mac"]):
                raise IntegrityError(f"database tampered: log leaf {i} does not authenticate")
            out.append({"leaf": i, "hash": h, **entry})
        return out

    def add_nonce(self, nonce_hex: str, expires: float, keep: int) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO att_nonces VALUES (?,?)", (nonce_hex, expires))
            self.trim_expiring(c, "att_nonces", keep)

    def take_nonce(self, nonce_hex: str) -> float | None:
        """Consume a nonce: its expiry if it existed, else None (single use)."""
        with self.tx() as c:
            row = c.execute("SELECT expires FROM att_nonces WHERE nonce=?", (nonce_hex,)).fetchone()
            c.execute("DELETE FROM att_nonces WHERE nonce=?", (nonce_hex,))
        return None if row is None else float(row["expires"])

    # --- tokens (written once: a MAC, no version) ------------------------------
    def put_token(self, c: Conn, token_hash: str, claims: str, public_key: bytes, expires: float) -> None:
        c.execute("INSERT INTO tokens (token_hash, claims, public_key, expires, mac) VALUES (?,?,?,?,?)",
                  (token_hash, claims, public_key, float(expires),
                   self.sealer.token_mac(token_hash, claims, public_key, expires)))

    def get_token(self, token_hash: str) -> Any:
        """The MAC-checked token row (kept in memory until it expires: a token row is
        written once, so a kept one is the row; a row the host deletes stays usable
        here until then, which buys it nothing)."""
        with self._mlock:
            hit = self._tokens.get(token_hash)
            if hit is not None:
                if hit["expires"] >= self.clock():
                    self._tokens.move_to_end(token_hash)
                    return hit
                del self._tokens[token_hash]   # expired: forgotten, not kept
        row = self._one("SELECT * FROM tokens WHERE token_hash=?", token_hash)
        if row is not None and not hmac_ok(self.sealer.token_mac(row["token_hash"], row["claims"],
                                                                  bytes(row["public_key"]), row["expires"]),
                                           row["mac"]):
            raise IntegrityError("database tampered: an attestation token row does not authenticate")
        if row is not None:
            with self._mlock:
                self._tokens[token_hash] = dict(row)
                while len(self._tokens) > _TOKEN_CACHE:
                    self._tokens.popitem(last=False)
        return row

    def _forget_tokens(self, token_hash: str | None = None) -> None:
        with self._mlock:
            if token_hash is None:
                self._tokens.clear()
            else:
                self._tokens.pop(token_hash, None)

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
            if table == "tokens":
                self._forget_tokens()
            # LIMIT with a huge bound: both engines take it (SQLite has no LIMIT ALL, PostgreSQL no LIMIT -1).
            c.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY expires DESC "
                      "LIMIT ? OFFSET ?)", (1 << 62, keep))

    def purge_expired(self, now: float) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM att_nonces WHERE expires < ?", (now,))
            c.execute("DELETE FROM tokens WHERE expires < ?", (now,))


class LogNodesEdited(IntegrityError):
    """The stored nodes do not reproduce the root this replica computed: the
    database was edited (not a fork: the leaves this replica followed are intact)."""

    http_status = 503


def _encode_versions(versions: Mapping[tuple[str, str], tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for (table, key), (ver, digest) in sorted(versions.items()):
        out += lp(table, key, str(ver), digest)
    return zlib.compress(bytes(out), 6)


def _decode_versions(blob: bytes) -> dict[tuple[str, str], tuple[int, bytes]]:
    raw, fields, at = zlib.decompress(blob), [], 0
    while at < len(raw):
        (n,) = struct.unpack_from(">I", raw, at)
        fields.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    if len(fields) % 4:
        raise IntegrityError("the log's snapshot is inconsistent")
    return {(fields[i].decode(), fields[i + 1].decode()): (int(fields[i + 2]), fields[i + 3])
            for i in range(0, len(fields), 4)}


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
