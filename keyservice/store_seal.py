"""What makes an untrusted database's rows checkable: a MAC over each row that
binds its table, primary key and version, and a Merkle-tree log over every
write (held in the audit table, sesemi/ks_log.py) whose leaves are MACed too.

The keys derive from the service's storage key, which only the service's
enclaves hold (sealing.py), so the host can neither forge a row nor move one
to another key, and a row copied from another deployment (another storage
key) does not verify. What a MAC cannot show, that a valid row is an *old*
version, the log shows: it names the newest version of every row, and its
signed tree head (a checkpoint) is what replicas and clients hold and demand
consistency proofs against (store.py, sesemi/ks_state.py).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sesemi.encoding import lp
from sesemi.ks_log import AUDIT_FIELDS, field as _field
from sesemi.merkle import EMPTY_ROOT

GENESIS = bytes(32)

# table -> (primary-key columns, value columns): the rows that are sealed and versioned.
VERSIONED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "principals": (("id",), ("public_key", "created")),
    "models": (("model_id",), ("owner", "key_ct", "policy", "updated")),
    "grants": (("model_id", "user_id"), ("granted", "active")),
    "request_keys": (("model_id", "user_id"), ("key_ct", "updated", "kver")),
    "call_seqs": (("principal",), ("last_seq",)),
    "marks": (("name",), ("value",)),
    "model_seals": (("model_id",), ("seal_id",)),
}
REAL_COLUMNS = frozenset({"created", "updated", "granted", "value", "ts"})


def normalize(columns: Sequence[str], values: Sequence[Any]) -> tuple[Any, ...]:
    """Values as the database gives them back (REAL columns as floats), so that
    the digest of a row written equals the digest of the row read."""
    return tuple(float(v) if c in REAL_COLUMNS and v is not None else
                 bytes(v) if isinstance(v, (bytearray, memoryview)) else v for c, v in zip(columns, values))


def row_key(key: Sequence[Any]) -> str:
    """The ledger's name for a primary key (ids hold no '/': principal ids are hex,
    model ids are checked by sesemi.names)."""
    return "/".join(str(k) for k in key)


class Sealer:
    def __init__(self, storage_key: bytes) -> None:
        def derive(label: bytes) -> bytes:
            return HKDF(hashes.SHA256(), 32, salt=None, info=b"sesemi/ks-store/v2/" + label).derive(storage_key)

        self._row_key = derive(b"row-mac")
        self._chain_key = derive(b"ledger-mac")
        self._token_key = derive(b"token-mac")
        self._snapshot_key = derive(b"snapshot-mac")
        # Names this deployment in the database without revealing anything.
        self.deployment = derive(b"deployment-id").hex()[:32]

    @staticmethod
    def row_digest(table: str, key: Sequence[Any], ver: int, values: Sequence[Any]) -> bytes:
        return hashlib.sha256(lp(b"sesemi/ks-row/v2", table, row_key(key), str(ver),
                                 *(_field(v) for v in values))).digest()

    def row_mac(self, digest: bytes) -> bytes:
        return hmac.new(self._row_key, digest, hashlib.sha256).digest()

    def row_ok(self, digest: bytes, mac: bytes | None) -> bool:
        return mac is not None and hmac.compare_digest(self.row_mac(digest), bytes(mac))

    @staticmethod
    def entry_hash_v2(prev: bytes, seq: int, entry: Mapping[str, Any]) -> bytes:
        """A schema-2 ledger entry (a hash chain), checked once when it is adopted."""
        return hashlib.sha256(lp(b"sesemi/ks-ledger/v2", prev, str(seq),
                                 *(_field(entry.get(f)) for f in AUDIT_FIELDS))).digest()

    def entry_mac(self, h: bytes) -> bytes:
        return hmac.new(self._chain_key, h, hashlib.sha256).digest()

    def entry_ok(self, h: bytes, mac: bytes | None) -> bool:
        return mac is not None and hmac.compare_digest(self.entry_mac(h), bytes(mac))

    def snapshot_mac(self, size: int, frontier: bytes, last_leaf: bytes, versions: bytes) -> bytes:
        return hmac.new(self._snapshot_key, lp(b"sesemi/ks-snapshot/v3", str(size), frontier, last_leaf,
                                               hashlib.sha256(versions).digest()), hashlib.sha256).digest()

    def token_mac(self, token_hash: str, claims: str, public_key: bytes, expires: float) -> bytes:
        return hmac.new(self._token_key, lp(token_hash, claims, public_key, repr(float(expires))),
                        hashlib.sha256).digest()


@dataclass(frozen=True)
class TreeHead:
    """The log's head: how many leaves, and the Merkle root over them."""

    size: int
    root: bytes

    def __str__(self) -> str:
        return f"{self.size}.{self.root.hex()}"


EMPTY_HEAD = TreeHead(0, EMPTY_ROOT)
