"""A model's roster: the users who may send it requests (granted AND enrolled),
each with the version of their current request key. The key service sends it,
signed, to enclaves that meet the model's policy; the action refuses every
other user locally, at no key-service cost, and fetches request keys only for
users on it (docs/protocol.md, "Refusing without the key service").

Wire format: fixed 20-byte records, base64 in JSON. A record is the first 16
bytes of SHA-256(lp(tag, model id, user id)) and the key version (4 bytes,
big endian; 0 in a delta means "no longer on the roster"). Hashed per model so
that every record has one size and a roster names no principal id in clear;
16 bytes: a junk id collides with a member's only by a 2^-128 chance, and even
then it merely costs one key fetch the key service refuses.

In memory (Roster): one sorted bytes object of records, binary searched, plus
a small overlay of changes merged when it grows: 10^6 members take 20 MB.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from typing import Any, Iterable

from .encoding import b64d, b64e, lp
from .errors import FormatError

ID_BYTES = 16
RECORD = ID_BYTES + 4
# At most this many members per model: 2^21 records are 40 MB in memory.
MAX_MEMBERS = 1 << 21
# Records per answer: 4,096 records are 109 KB of base64, far below the
# enclave's 8 MiB answer bound (sesemi/stdlib_http.py MAX_RESPONSE); a page
# costs the key service two sealed reads a record, ~0.6 s on this machine,
# well within an enclave call's 3 s read bound (sesemi/timeouts.py).
PAGE = 4_096
_OVERLAY_MERGE = 4_096


def id_hash(model_id: str, user_id: str) -> bytes:
    return hashlib.sha256(lp("sesemi/roster/v1", model_id, user_id)).digest()[:ID_BYTES]


def encode(records: Iterable[tuple[bytes, int]]) -> str:
    return b64e(b"".join(h + struct.pack(">I", v) for h, v in records))


def decode_raw(text: Any, what: str = "roster records") -> bytes:
    raw = b64d(text, what)
    if len(raw) % RECORD:
        raise FormatError(f"{what}: not a whole number of {RECORD}-byte records")
    return raw


def decode(text: Any, what: str = "roster records") -> list[tuple[bytes, int]]:
    raw = decode_raw(text, what)
    return [(raw[i:i + ID_BYTES], struct.unpack(">I", raw[i + ID_BYTES:i + RECORD])[0])
            for i in range(0, len(raw), RECORD)]


class Roster:
    """Members of one model's roster: id hash -> request-key version."""

    def __init__(self, model_id: str, records: Iterable[tuple[bytes, int]] = ()) -> None:
        self.model_id = model_id
        self._base = b""          # sorted records, RECORD bytes each
        self._overlay: dict[bytes, int] = {}  # changes since the last merge; 0: removed
        self.add(records)
        self._merge()

    @classmethod
    def from_raw(cls, model_id: str, raws: Iterable[bytes]) -> "Roster":
        """The whole roster from its pages' raw records, sorted once (paging a
        large roster in through add() would merge once per page)."""
        recs = sorted(raw[i:i + RECORD] for raw in raws for i in range(0, len(raw), RECORD))
        if len(recs) > MAX_MEMBERS:
            raise FormatError(f"a roster of more than {MAX_MEMBERS} members is refused")
        r = cls(model_id)
        r._base = b"".join(recs)
        return r

    def add(self, records: Iterable[tuple[bytes, int]]) -> None:
        """Apply records: a version sets a member, 0 removes one."""
        for h, v in records:
            if len(h) != ID_BYTES or not 0 <= v < 1 << 32:
                raise FormatError("roster record out of range")
            self._overlay[h] = v
        if len(self._overlay) > _OVERLAY_MERGE:
            self._merge()
        if len(self._base) // RECORD + len(self._overlay) > MAX_MEMBERS and len(self) > MAX_MEMBERS:
            raise FormatError(f"a roster of more than {MAX_MEMBERS} members is refused")

    def _merge(self) -> None:
        """The overlay into the sorted base: a bisect per change and one copy of
        the base (no per-member Python objects)."""
        if not self._overlay:
            return
        n = len(self._base) // RECORD
        keys = _Keys(self._base, n)
        parts, pos = [], 0
        for h in sorted(self._overlay):
            i = bisect_left(keys, h, pos)
            parts.append(self._base[pos * RECORD:i * RECORD])
            if i < n and keys[i] == h:
                i += 1  # replaced or removed
            v = self._overlay[h]
            if v:
                parts.append(h + struct.pack(">I", v))
            pos = i
        parts.append(self._base[pos * RECORD:])
        self._base = b"".join(parts)
        self._overlay = {}

    def _base_lookup(self, h: bytes) -> int | None:
        n = len(self._base) // RECORD
        keys = _Keys(self._base, n)
        i = bisect_left(keys, h)
        if i < n and keys[i] == h:
            return struct.unpack(">I", self._base[i * RECORD + ID_BYTES:(i + 1) * RECORD])[0]
        return None

    def version_of(self, user_id: str) -> int | None:
        """The member's request-key version, or None if not on the roster."""
        h = id_hash(self.model_id, user_id)
        v = self._overlay.get(h)
        if v is None:
            v = self._base_lookup(h)
        return v or None

    def __len__(self) -> int:
        n = len(self._base) // RECORD
        for h, v in self._overlay.items():
            in_base = self._base_lookup(h) is not None
            n += (1 if v and not in_base else 0) - (1 if not v and in_base else 0)
        return n


class _Keys:
    """The id hashes of a sorted record buffer, as a sequence bisect can search."""

    def __init__(self, buf: bytes, n: int) -> None:
        self.buf, self.n = buf, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> bytes:
        return self.buf[i * RECORD:i * RECORD + ID_BYTES]
