"""Schema versions and migrations, one list for both backends.

Version 1 is the schema the key service used before replicas (SQLite only).
Version 2 seals every row that matters: each versioned table gains `ver` and
`mac` (store_seal.py), grants keep revocations as tombstones (`active`), and
the audit table becomes the ledger: a hash chain over every write, each entry
MACed. SQLite records its version in `PRAGMA user_version`, PostgreSQL in
`schema_version`. Version 3 turns the log into a Merkle tree (store.py,
sesemi/ks_log.py): audit rows gain their leaf index (`leaf`, NULL for entries
of an older ledger, which are history, not leaves), `log_nodes` holds the
perfect subtrees proofs are built from, and `log_snapshots` the sealed
frontier and row-version map a start-up resumes from. Column types are written with placeholders that each
backend fills in ({BLOB}, {REAL}, {INT}, {SERIAL}).
"""

from __future__ import annotations

LATEST = 3

V1 = """
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, public_key {BLOB} NOT NULL, created {REAL} NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES principals(id),
    key_ct {BLOB} NOT NULL, policy TEXT NOT NULL, updated {REAL} NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    model_id TEXT NOT NULL REFERENCES models(model_id), user_id TEXT NOT NULL REFERENCES principals(id),
    granted {REAL} NOT NULL, PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS request_keys (
    model_id TEXT NOT NULL, user_id TEXT NOT NULL, key_ct {BLOB} NOT NULL, updated {REAL} NOT NULL,
    PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS request_key_versions (
    model_id TEXT NOT NULL, user_id TEXT NOT NULL, version {INT} NOT NULL, PRIMARY KEY (model_id, user_id));
CREATE TABLE IF NOT EXISTS call_seqs (principal TEXT PRIMARY KEY, last_seq {INT} NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value {REAL} NOT NULL);
CREATE TABLE IF NOT EXISTS model_seals (
    model_id TEXT PRIMARY KEY REFERENCES models(model_id), seal_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS att_nonces (nonce TEXT PRIMARY KEY, expires {REAL} NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, claims TEXT NOT NULL, public_key {BLOB} NOT NULL, expires {REAL} NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq {SERIAL}, ts {REAL} NOT NULL, event TEXT NOT NULL, outcome TEXT NOT NULL,
    principal TEXT, model_id TEXT, user_id TEXT, mrenclave TEXT, tee TEXT, reason TEXT)
"""

_VERSIONED = ("principals", "models", "grants", "request_keys", "call_seqs", "model_seals")

V2 = ";\n".join(
    [f"ALTER TABLE {t} ADD COLUMN ver {{INT}}" for t in _VERSIONED]
    + [f"ALTER TABLE {t} ADD COLUMN mac {{BLOB}}" for t in _VERSIONED]
    + ["ALTER TABLE grants ADD COLUMN active {INT} NOT NULL DEFAULT 1",
       # The request key's version joins its row (one sealed read gives both).
       "ALTER TABLE request_keys ADD COLUMN kver {INT} NOT NULL DEFAULT 1",
       "UPDATE request_keys SET kver = COALESCE((SELECT version FROM request_key_versions v WHERE "
       "v.model_id = request_keys.model_id AND v.user_id = request_keys.user_id), 1)",
       "DROP TABLE request_key_versions",
       "ALTER TABLE tokens ADD COLUMN mac {BLOB}",
       "CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value {REAL} NOT NULL, ver {INT}, mac {BLOB})",
       "INSERT INTO marks (name, value) SELECT substr(key, 6), value FROM meta WHERE key LIKE 'mark:%'",
       "DELETE FROM meta WHERE key LIKE 'mark:%'"]
    + [f"ALTER TABLE audit ADD COLUMN {c}" for c in (
        "row_tbl TEXT", "row_key TEXT", "row_ver {INT}", "row_digest {BLOB}", "prev {BLOB}", "hash {BLOB}",
        "mac {BLOB}")]
    + ["CREATE INDEX IF NOT EXISTS audit_model ON audit (model_id)",
       "CREATE INDEX IF NOT EXISTS audit_principal ON audit (principal)"])

V3 = """
ALTER TABLE audit ADD COLUMN leaf {INT};
CREATE UNIQUE INDEX IF NOT EXISTS audit_leaf ON audit (leaf);
CREATE TABLE IF NOT EXISTS log_nodes (
    level {INT} NOT NULL, idx {INT} NOT NULL, hash {BLOB} NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS log_snapshots (
    size {INT} PRIMARY KEY, frontier {BLOB} NOT NULL, last_leaf {BLOB} NOT NULL, versions {BLOB} NOT NULL,
    mac {BLOB} NOT NULL)
"""

# (version it brings the schema to, its statements)
MIGRATIONS: list[tuple[int, str]] = [(1, V1), (2, V2), (3, V3)]


def statements(script: str, types: dict[str, str]) -> list[str]:
    return [s.strip() for s in script.format(**types).split(";") if s.strip()]
