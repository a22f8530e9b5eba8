"""Sealed model format: chunked AES-256-GCM, streamed in both directions.

Layout (all integers big-endian):

    header  = MAGIC(8) | version u16 (2) | reserved u16 | chunk_size u32
              | plaintext_len u64 | seal_id (16) | id_len u16 | model_id (utf-8)
    chunk i = nonce(12) | AES-GCM(key, nonce, chunk_i, AAD_i)   (ciphertext + 16-byte tag)
    AAD_i   = lp("sesemi/sealed-model/v2", sha256(header), u64 i, last_flag)

The header digest in every AAD binds version, chunk size, length, seal id and
model id to each chunk; the index stops reordering; the last-chunk flag stops
truncation at a chunk boundary. The seal id is 128 random bits per seal: two
seals of one model under one key (the SDK allows reusing a key) have
different headers, so their chunks do not splice, and the owner registers the
seal id with the key, so the key service releases the key only to an enclave
whose pack holds that seal (an old seal does not open like the current one).
Random nonces under a fresh key per seal mean no (key, nonce) pair repeats.

Memory: sealing reads one chunk at a time. Opening checks the header's
length against the blob's real size, then decrypts the first chunk into a
one-chunk buffer: the header is authenticated only by that chunk's tag (its
digest is in every chunk's AAD), so a forged header claiming 512 MiB costs one
chunk before its refusal. Only then is the plaintext allocated, once, as the
`bytes` object LiteRT's `model_content` needs, and the remaining chunks are
decrypted straight into it: no final copy (which cost ~50 ms of page faults
per 100 MB model on every cold start; docs/performance.md). Peak: one
plaintext plus one chunk.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .encoding import lp
from .errors import FormatError, IntegrityError
from .names import check_model_id

MAGIC = b"SSMI\x00MDL"
VERSION = 2
SEAL_ID_LEN = 16
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 1 << 12
MAX_CHUNK = 1 << 24
MAX_PLAINTEXT = 1 << 34  # 16 GiB: far above any enclave's heap
_FIXED = struct.Struct(">8sHHIQ16sH")
NONCE_LEN = 12
TAG_LEN = 16


def new_model_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True)
class SealedHeader:
    version: int
    chunk_size: int
    plaintext_len: int
    model_id: str
    raw: bytes
    seal_id: str = ""   # hex, 16 bytes

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.plaintext_len // self.chunk_size))

    @property
    def sealed_len(self) -> int:
        return len(self.raw) + self.n_chunks * (NONCE_LEN + TAG_LEN) + self.plaintext_len

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def new_seal_id() -> str:
    return os.urandom(SEAL_ID_LEN).hex()


def _encode_header(model_id: str, chunk_size: int, plaintext_len: int, seal_id: str | None = None) -> SealedHeader:
    mid = check_model_id(model_id).encode("ascii")
    seal_id = seal_id or new_seal_id()
    if len(seal_id) != 2 * SEAL_ID_LEN or seal_id.strip("0123456789abcdef"):
        raise FormatError("seal id: expected 16 bytes of lower-case hex")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise FormatError(f"chunk size must be in [{MIN_CHUNK}, {MAX_CHUNK}]")
    if plaintext_len > MAX_PLAINTEXT:
        raise FormatError("model too large")
    raw = _FIXED.pack(MAGIC, VERSION, 0, chunk_size, plaintext_len, bytes.fromhex(seal_id), len(mid)) + mid
    return SealedHeader(VERSION, chunk_size, plaintext_len, model_id, raw, seal_id)


def _chunk_aad(header: SealedHeader, index: int, last: bool) -> bytes:
    return lp("sesemi/sealed-model/v2", header.digest, struct.pack(">Q", index), b"\x01" if last else b"\x00")


def read_header(read: Callable[[int], bytes]) -> SealedHeader:
    fixed = read(_FIXED.size)
    if len(fixed) != _FIXED.size:
        raise FormatError("sealed model: truncated header")
    magic, version, _res, chunk_size, plaintext_len, seal_id, id_len = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise FormatError("sealed model: bad magic (not a sealed SeSeMI model)")
    if version != VERSION:
        raise FormatError(f"sealed model: unsupported version {version} (this release reads version "
                          f"{VERSION}: seal the model again)")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or plaintext_len > MAX_PLAINTEXT or not 0 < id_len <= 128:
        raise FormatError("sealed model: header field out of range")
    mid = read(id_len)
    if len(mid) != id_len:
        raise FormatError("sealed model: truncated header")
    try:
        model_id = mid.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("sealed model: model id is not UTF-8") from exc
    return SealedHeader(version, chunk_size, plaintext_len, model_id, fixed + mid, seal_id.hex())


def seal_stream(src: BinaryIO, dst: BinaryIO, key: bytes, model_id: str, plaintext_len: int,
                chunk_size: int = DEFAULT_CHUNK, progress: Callable[[int], None] | None = None) -> SealedHeader:
    """Seal under `key` with a fresh random seal id (`header.seal_id`): publish
    that id with the key, or no enclave receives the key for this seal.
    `progress(n)` is told each chunk's plaintext length once it is written."""
    header = _encode_header(model_id, chunk_size, plaintext_len)
    aead = AESGCM(key)
    dst.write(header.raw)
    n = header.n_chunks
    for i in range(n):
        want = min(chunk_size, plaintext_len - i * chunk_size)
        chunk = src.read(want)
        if len(chunk) != want:
            raise FormatError("model file changed size while sealing")
        nonce = os.urandom(NONCE_LEN)
        dst.write(nonce)
        dst.write(aead.encrypt(nonce, chunk, _chunk_aad(header, i, i == n - 1)))
        if progress is not None:
            progress(want)
    if src.read(1):
        raise FormatError("model file changed size while sealing")
    return header


def seal_file(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str], key: bytes, model_id: str,
              chunk_size: int = DEFAULT_CHUNK, progress: Callable[[int], None] | None = None) -> SealedHeader:
    """Write OUT.tmp, then rename it over OUT; a failure leaves neither a
    partial OUT nor the temporary file."""
    check_model_id(model_id)
    tmp = f"{os.fspath(out_path)}.tmp"
    with open(model_path, "rb") as src:
        try:
            with open(tmp, "wb") as dst:
                header = seal_stream(src, dst, key, model_id, os.fstat(src.fileno()).st_size, chunk_size, progress)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, out_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return header


def _writable_bytes(n: int) -> tuple[bytes | bytearray, memoryview]:
    """A new `bytes` of n uninitialised bytes and a writable view of it, through
    CPython's documented API: PyBytes_FromStringAndSize(NULL, n) and
    PyBytes_AsString. Filled before anything else sees it, as C extensions
    do. Elsewhere (no ctypes.pythonapi): a bytearray, copied once at the end."""
    try:
        api = ctypes.pythonapi
        new, addr = api.PyBytes_FromStringAndSize, api.PyBytes_AsString
    except (AttributeError, OSError):  # pragma: no cover - not CPython
        buf = bytearray(n)
        return buf, memoryview(buf)
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
    addr.restype, addr.argtypes = ctypes.c_void_p, (ctypes.py_object,)
    out = new(None, n)
    return out, memoryview((ctypes.c_char * n).from_address(addr(out))).cast("B")


def _wipe(buf: bytearray) -> None:
    """Zero a buffer in place (a `bytes(n)` of zeros would be one more chunk at the peak)."""
    if buf:
        ctypes.memset((ctypes.c_char * len(buf)).from_buffer(buf), 0, len(buf))


def open_stream(read: Callable[[int], bytes], available: int, key: bytes, expected_model_id: str) -> bytes:
    """Decrypt a sealed model of `available` bytes into memory; never touches disk."""
    header = read_header(read)
    if header.model_id != expected_model_id:
        raise IntegrityError("sealed model: model id in header does not match the expected id")
    if header.sealed_len != available:
        raise IntegrityError("sealed model: length does not match its header (truncated or extended)")
    aead = AESGCM(key)
    n = header.n_chunks
    first = bytearray(min(header.chunk_size, header.plaintext_len))
    out: bytes | bytearray | None = None
    view: memoryview | None = None
    pos = 0
    try:
        for i in range(n):
            want = min(header.chunk_size, header.plaintext_len - pos)
            blob = read(NONCE_LEN + want + TAG_LEN)
            if len(blob) != NONCE_LEN + want + TAG_LEN:
                raise IntegrityError("sealed model: truncated")
            # Chunk 0 authenticates the header (and so plaintext_len): only after it
            # is the whole plaintext allocated; later chunks go straight into it.
            with memoryview(blob) as sealed, memoryview(first) as tmp:
                target = tmp[:want] if view is None else view[pos:pos + want]
                try:
                    aead.decrypt_into(sealed[:NONCE_LEN], sealed[NONCE_LEN:], _chunk_aad(header, i, i == n - 1),
                                      target)
                except InvalidTag as exc:
                    raise IntegrityError(f"sealed model: chunk {i} does not authenticate "
                                         "(tampered or wrong key)") from exc
                if view is None:
                    out, view = _writable_bytes(header.plaintext_len)
                    view[:want] = tmp[:want]
            pos += want
    except BaseException:
        if view is not None:
            view[:pos] = bytes(pos)  # do not leave authenticated plaintext behind on failure
        raise
    finally:
        _wipe(first)
        if view is not None:
            view.release()
    if out is None:  # an empty model: no chunk carried plaintext
        return b""
    return out if isinstance(out, bytes) else bytes(out)
