"""A flat binary encoding for named tensors: what goes inside an envelope.

    MAGIC(4) | count u16 | per tensor: name_len u16 | name | dtype_len u8 | dtype
             | ndim u8 | dims u64[ndim] | raw little-endian C-order bytes

Decoding returns views into the buffer (no copy), which is why the decrypted
request bytes are kept alive by the caller for the duration of the inference.
"""

from __future__ import annotations

import struct
from typing import Mapping

import numpy as np

from .errors import FormatError

MAGIC = b"SST1"
_ALLOWED = {"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"}
MAX_TENSORS = 64
MAX_NDIM = 8


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    parts = [MAGIC, struct.pack(">H", len(tensors))]
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype.name not in _ALLOWED:
            raise FormatError(f"tensor {name!r}: dtype {arr.dtype.name} is not supported")
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        nb = name.encode("utf-8")
        dt = arr.dtype.name.encode()
        parts.append(struct.pack(">H", len(nb)) + nb + struct.pack(">B", len(dt)) + dt)
        parts.append(struct.pack(f">B{arr.ndim}Q", arr.ndim, *arr.shape))
        parts.append(arr.data)  # type: ignore[arg-type]  # a buffer: b"".join takes it without a copy
    return b"".join(parts)


def decode(buf: bytes) -> dict[str, np.ndarray]:
    mv = memoryview(buf)
    try:
        if bytes(mv[:4]) != MAGIC:
            raise FormatError("tensors: bad magic")
        (count,) = struct.unpack_from(">H", mv, 4)
        if count > MAX_TENSORS:
            raise FormatError("tensors: too many tensors")
        pos = 6
        out: dict[str, np.ndarray] = {}
        for _ in range(count):
            (nl,) = struct.unpack_from(">H", mv, pos)
            pos += 2
            name = bytes(mv[pos:pos + nl]).decode("utf-8")
            pos += nl
            (dl,) = struct.unpack_from(">B", mv, pos)
            pos += 1
            dtype = bytes(mv[pos:pos + dl]).decode("ascii")
            pos += dl
            if dtype not in _ALLOWED:
                raise FormatError("tensors: unsupported dtype")
            (ndim,) = struct.unpack_from(">B", mv, pos)
            pos += 1
            if ndim > MAX_NDIM:
                raise FormatError("tensors: too many dimensions")
            shape = struct.unpack_from(f">{ndim}Q", mv, pos)
            pos += 8 * ndim
            dt = np.dtype(dtype).newbyteorder("<")
            n = int(np.prod(shape, dtype=np.uint64)) * dt.itemsize if ndim else dt.itemsize
            if pos + n > len(mv):
                raise FormatError("tensors: truncated data")
            if name in out:
                raise FormatError("tensors: duplicate name")
            out[name] = np.frombuffer(mv[pos:pos + n], dtype=dt).reshape(shape)
            pos += n
        if pos != len(mv):
            raise FormatError("tensors: trailing bytes")
        return out
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise FormatError("tensors: malformed encoding") from exc
