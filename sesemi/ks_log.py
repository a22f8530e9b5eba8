"""The key service's log as its clients see it: what a leaf is, how proofs
travel, and how a receipt is checked offline (docs/keyservice.md, "The log").

Every audited write of the key service is one leaf of an RFC 9162 Merkle
tree (sesemi/merkle.py). A leaf's entry is the length-prefixed encoding of
its index and its audit fields, each value typed so that None, '' and 0
never encode alike; a write's leaf also names the row it wrote and that
row's new version and digest, so a leaf commits to the row version it wrote.
The service and its clients share this module so that a client can recompute
a leaf from the fields it was shown.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from . import checkpoint, merkle
from .encoding import lp
from .errors import FormatError, IntegrityError

AUDIT_FIELDS = ("ts", "event", "outcome", "principal", "model_id", "user_id", "mrenclave", "tee", "reason",
                "row_tbl", "row_key", "row_ver", "row_digest")
LEAF_DOMAIN = b"sesemi/ks-log/v3"

# Headers: the client's held tree size goes out; the checkpoint and a proof
# from that size come back, all under the response signature (ks_response.py).
H_KNOWN = "X-Sesemi-KS-Known-Size"
H_CHECKPOINT = "X-Sesemi-KS-Checkpoint"   # base64 of the signed note (notes hold newlines)
H_PROOF_FROM = "X-Sesemi-KS-Proof-From"
H_PROOF = "X-Sesemi-KS-Proof"             # base64 of the concatenated hashes
MAX_PROOF_HASHES = 130                    # 2·64 + 2: more than any tree of 2^63 leaves needs


def field(v: Any) -> bytes:
    """One value, typed, so that None, '' and 0 (or 1 and 1.0) never encode alike."""
    if v is None:
        return b"n"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return b"b" + bytes(v)
    if isinstance(v, bool):
        raise TypeError("booleans are stored as integers")
    if isinstance(v, int):
        return b"i" + str(v).encode()
    if isinstance(v, float):
        return b"f" + repr(v).encode()
    return b"s" + str(v).encode("utf-8")


def entry_tail(entry: Mapping[str, Any]) -> bytes:
    """The part of a leaf's encoding that does not depend on its index (a writer
    computes it before it takes the log's lock)."""
    return lp(*(field(entry.get(f)) for f in AUDIT_FIELDS))


def entry_bytes(index: int, entry: Mapping[str, Any], tail: bytes | None = None) -> bytes:
    return lp(LEAF_DOMAIN, str(index)) + (entry_tail(entry) if tail is None else tail)


def leaf_of(index: int, entry: Mapping[str, Any], tail: bytes | None = None) -> bytes:
    return merkle.leaf_hash(entry_bytes(index, entry, tail))


# --- entries as JSON (answers, receipts) --------------------------------------------
def entry_to_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = {f: entry.get(f) for f in AUDIT_FIELDS}
    if out["row_digest"] is not None:
        out["row_digest"] = bytes(out["row_digest"]).hex()
    return out


def entry_from_json(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != set(AUDIT_FIELDS):
        raise FormatError(f"a log entry has exactly the fields {', '.join(AUDIT_FIELDS)}")
    out = dict(obj)
    for f, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int, float))):
            raise FormatError(f"a log entry's {f} is not a string, a number or null")
    if out["row_digest"] is not None:
        try:
            out["row_digest"] = bytes.fromhex(out["row_digest"])
        except (TypeError, ValueError):
            raise FormatError("a log entry's row_digest is not hex") from None
    if isinstance(out["ts"], int) and not isinstance(out["ts"], bool):
        out["ts"] = float(out["ts"])  # JSON may print a whole float without its point
    return out


# --- proofs on the wire ------------------------------------------------------------
def encode_proof(hashes: Sequence[bytes]) -> str:
    return base64.b64encode(b"".join(hashes)).decode()


def decode_proof(text: str | None) -> list[bytes]:
    try:
        raw = base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("a log proof is not base64") from None
    if len(raw) % merkle.HASH_SIZE or len(raw) // merkle.HASH_SIZE > MAX_PROOF_HASHES:
        raise FormatError("a log proof is not a short list of 32-byte hashes")
    return [raw[i:i + merkle.HASH_SIZE] for i in range(0, len(raw), merkle.HASH_SIZE)]


def encode_note(note: str) -> str:
    return base64.b64encode(note.encode()).decode()


def decode_note(text: str | None) -> str:
    try:
        return base64.b64decode(text or "", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise FormatError("a checkpoint header is not base64 of a UTF-8 note") from None


# --- receipts ------------------------------------------------------------------------
@dataclass(frozen=True)
class Receipt:
    """What an owner or user keeps of a write: the leaf, its inclusion proof, and
    the signed checkpoint the proof leads to."""

    index: int
    entry: dict[str, Any]
    proof: list[bytes]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"format": "sesemi-ks-receipt/v1", "leaf_index": self.index, "entry": entry_to_json(self.entry),
                "inclusion_proof": [h.hex() for h in self.proof], "checkpoint": self.note}

    @classmethod
    def from_json(cls, obj: Any) -> Receipt:
        if not isinstance(obj, dict) or obj.get("format") != "sesemi-ks-receipt/v1":
            raise FormatError("not a key-service receipt (format sesemi-ks-receipt/v1)")
        index, proof, note = obj.get("leaf_index"), obj.get("inclusion_proof"), obj.get("checkpoint")
        if type(index) is not int or index < 0 or not isinstance(proof, list) or not isinstance(note, str):
            raise FormatError("a receipt needs leaf_index, inclusion_proof and checkpoint")
        if len(proof) > MAX_PROOF_HASHES:
            raise FormatError("a receipt's inclusion proof is too long")
        try:
            hashes = [bytes.fromhex(h) for h in proof]
        except (TypeError, ValueError):
            raise FormatError("a receipt's inclusion proof is not hex") from None
        return cls(index, entry_from_json(obj.get("entry")), hashes, note)

    def verify(self, signing_public: bytes) -> checkpoint.Checkpoint:
        """The checkpoint, once its signature and the leaf's inclusion check; else IntegrityError."""
        cp = checkpoint.open_(self.note, signing_public)
        try:
            merkle.verify_inclusion(leaf_of(self.index, self.entry), self.index, cp.size, self.proof, cp.root)
        except merkle.ProofError as exc:
            raise IntegrityError(f"receipt: leaf {self.index} is not in the signed checkpoint ({exc})") from None
        return cp
