"""Byte-level encodings shared by every wire format.

Fast codecs (pybase64, orjson) are used when present: on a 600 KB tensor the
stdlib ones cost more than the AES-GCM itself (docs/architecture.md §8, performance notes).
"""

from __future__ import annotations

import binascii
import struct
from typing import Any

from .errors import FormatError

try:  # pragma: no cover - exercised implicitly
    import pybase64 as _b64

    def b64e(data: bytes) -> str:
        return _b64.b64encode_as_string(data)

    def _b64d(text: str | bytes) -> bytes:
        return _b64.b64decode(text, validate=True)

except ImportError:  # pragma: no cover
    import base64 as _b64  # type: ignore[no-redef]

    def b64e(data: bytes) -> str:
        return _b64.b64encode(data).decode("ascii")

    def _b64d(text: str | bytes) -> bytes:
        return _b64.b64decode(text, validate=True)

try:
    import orjson as _json

    def json_dumps(obj: Any) -> bytes:
        return _json.dumps(obj, option=_json.OPT_SORT_KEYS)

    def json_loads(data: bytes | str) -> Any:
        return _json.loads(data)

    JSONDecodeError: type[Exception] = _json.JSONDecodeError
except ImportError:  # pragma: no cover
    import json as _json  # type: ignore[no-redef]

    def json_dumps(obj: Any) -> bytes:
        return _json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()  # type: ignore[call-arg,attr-defined,no-any-return,unused-ignore]

    def json_loads(data: bytes | str) -> Any:
        return _json.loads(data)

    JSONDecodeError = ValueError


def b64d(text: Any, what: str = "field") -> bytes:
    """Decode canonical base64 (standard alphabet, padded, zero pad bits) or
    raise FormatError naming the field (never its value). Only the canonical
    form: otherwise two strings decode to the same bytes (`QQ==` and `QR==`),
    so signed or hashed text would not pin the bytes it stands for."""
    if not isinstance(text, (str, bytes)):
        raise FormatError(f"{what}: expected a base64 string")
    try:
        raw = _b64d(text)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what}: invalid base64") from exc
    # The strict decoder already refuses other alphabets and missing or
    # misplaced padding; what it lets through are non-zero pad bits, which live
    # in the last quantum only. So re-encoding that quantum decides (a
    # whole-string re-encode doubled the cost on a 600 KB tensor).
    tail = len(raw) % 3 or 3
    last = b64e(raw[-tail:]) if raw else ""
    end = text[-4:] if isinstance(text, str) else text[-4:].decode("ascii", "replace")
    if len(text) != 4 * -(-len(raw) // 3) or end != last:
        raise FormatError(f"{what}: non-canonical base64")
    return raw


def hexd(text: Any, what: str = "field", length: int | None = None) -> bytes:
    # Lower-case digits only: bytes.fromhex also takes spaces and upper case,
    # so several strings would stand for the same bytes.
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a hex string")
    if len(text) % 2 or text.strip("0123456789abcdef"):
        raise FormatError(f"{what}: invalid hex (lower-case digits, two per byte)")
    raw = bytes.fromhex(text)
    if length is not None and len(raw) != length:
        raise FormatError(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces): what gets signed and hashed."""
    return json_dumps(obj)


def lp(*fields: bytes | str) -> bytes:
    """Length-prefix each field so that no two field lists encode alike.

    Used for every AAD, HPKE info and signed string: plain concatenation would
    let ("ab", "c") collide with ("a", "bc").
    """
    out = bytearray()
    for f in fields:
        b = f.encode("utf-8") if isinstance(f, str) else bytes(f)
        out += struct.pack(">I", len(b))
        out += b
    return bytes(out)
