"""Model packs: one file holding several sealed models and a manifest.

    MAGIC(8) | version u16 | manifest_len u32 | manifest (canonical JSON) | sealed models...

The manifest lists, per model, its id, byte range, the SHA-256 of its
sealed blob, its plaintext size and its seal id (version 2). It holds no
secret (ids and sizes only); each entry must agree with its blob's sealed
header. Its digest is measured
into the action's mrenclave, so swapping or editing models in a pack changes
the measurement and the key service stops releasing keys to it. A blob is
streamed, never held whole: an edited byte is refused by the AES-GCM tag of
its chunk as that chunk is decrypted (no unauthenticated plaintext is used),
and the per-blob digest, checked after the last chunk over exactly the bytes
that were decrypted, names the tampering ("does not match the pack manifest").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .encoding import JSONDecodeError, canonical_json, json_loads
from .background_digest import BackgroundDigest
from .errors import FormatError, IntegrityError, NotFound
from .sealed_model import read_header

MAGIC = b"SSMIPACK"
VERSION = 2
_HEAD = struct.Struct(">8sHI")
MAX_MANIFEST = 1 << 20


@dataclass(frozen=True)
class PackEntry:
    model_id: str
    offset: int
    length: int
    sha256: str
    plaintext_len: int
    seal_id: str   # the sealed header's: what the key service releases the model key for


def build(out_path: str | os.PathLike[str], sealed_paths: Iterable[str | os.PathLike[str]],
          progress: Callable[[int], None] | None = None) -> list[PackEntry]:
    """`progress(n)` is told each block of sealed bytes once it is copied in."""
    paths = list(sealed_paths)
    entries: list[PackEntry] = []
    offset = 0
    for p in paths:
        with open(p, "rb") as f:
            header = read_header(f.read)
        size = os.path.getsize(p)
        if header.sealed_len != size:
            raise FormatError(f"{p}: sealed model is truncated or extended")
        if any(e.model_id == header.model_id for e in entries):
            raise FormatError(f"model id {header.model_id!r} appears twice in the pack")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        entries.append(PackEntry(header.model_id, offset, size, h.hexdigest(), header.plaintext_len,
                                 header.seal_id))
        offset += size
    if not entries:
        raise FormatError("a pack needs at least one sealed model")
    manifest = canonical_json({"version": VERSION, "models": [e.__dict__ for e in entries]})
    tmp = f"{os.fspath(out_path)}.tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(_HEAD.pack(MAGIC, VERSION, len(manifest)))
            out.write(manifest)
            for p in paths:
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        out.write(block)
                        if progress is not None:
                            progress(len(block))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a failed build leaves no partial OUT.tmp behind
        raise
    return entries


class Pack:
    """Read side. Holds an fd; reads are positional so threads can share it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise FormatError(f"cannot open pack {self.path}: {exc.strerror}") from exc
        try:
            size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, _HEAD.size, 0)
            if len(head) != _HEAD.size:
                raise FormatError("pack: truncated header")
            magic, version, mlen = _HEAD.unpack(head)
            if magic != MAGIC:
                raise FormatError("pack: bad magic (not a SeSeMI model pack)")
            if version != VERSION:
                raise FormatError(f"pack: unsupported version {version}")
            if mlen > MAX_MANIFEST:
                raise FormatError("pack: manifest too large")
            raw_manifest = os.pread(self._fd, mlen, _HEAD.size)
            if len(raw_manifest) != mlen:
                raise FormatError("pack: truncated manifest")
            self.manifest_digest = hashlib.sha256(head + raw_manifest).hexdigest()
            self._base = _HEAD.size + mlen
            self.entries = _parse_manifest(raw_manifest, size - self._base)
            for e in self.entries.values():
                self._check_header(e)
        except BaseException:
            os.close(self._fd)
            raise

    def _check_header(self, e: PackEntry) -> None:
        """The manifest's plaintext_len sizes the memory budget before anything is
        decrypted, so it must be what the blob can hold: its sealed header agrees
        with the manifest, and that header's length is exactly the blob's."""
        start, end = self._base + e.offset, self._base + e.offset + e.length
        pos = start

        def read(n: int) -> bytes:
            nonlocal pos
            data = os.pread(self._fd, max(0, min(n, end - pos)), pos)
            pos += len(data)
            return data

        header = read_header(read)
        if ((header.model_id, header.sealed_len, header.plaintext_len, header.seal_id)
                != (e.model_id, e.length, e.plaintext_len, e.seal_id)):
            raise IntegrityError(f"pack: manifest entry {e.model_id!r} disagrees with its sealed header "
                                 "(id, length, plaintext_len or seal id)")

    @property
    def model_ids(self) -> list[str]:
        return list(self.entries)

    def entry(self, model_id: str) -> PackEntry:
        try:
            return self.entries[model_id]
        except KeyError:
            raise NotFound(f"model {model_id!r} is not in this action's pack") from None

    def read_sealed(self, model_id: str) -> bytes:
        """The sealed (ciphertext) blob, checked against the manifest digest."""
        reader = self.reader(model_id)
        blob = reader.read(reader.length)
        reader.verify()
        return blob

    def reader(self, model_id: str) -> "SealedReader":
        """Stream a sealed model chunk by chunk from the file, digesting as it goes:
        the ciphertext is never held whole, so loading peaks at the plaintext
        plus one chunk. Call `verify()` after the last read."""
        e = self.entry(model_id)
        return SealedReader(self._fd, self._base + e.offset, e.length, e.sha256, model_id)

    def close(self) -> None:
        os.close(self._fd)


def _parse_manifest(raw: bytes, blob_area: int) -> dict[str, PackEntry]:
    try:
        doc: Any = json_loads(raw)
    except JSONDecodeError as exc:
        raise FormatError("pack: manifest is not JSON") from exc
    version = doc.get("version") if isinstance(doc, dict) else None
    if type(version) is not int or version != VERSION or not isinstance(doc.get("models"), list):
        raise FormatError("pack: manifest has the wrong shape")
    entries: dict[str, PackEntry] = {}
    end = 0
    for m in doc["models"]:
        # Exact JSON types: int("5"), int(5.9) and int(True) would all pass a lenient parse.
        if (not isinstance(m, dict) or set(m) != set(PackEntry.__dataclass_fields__)
                or not all(type(m[k]) is str for k in ("model_id", "sha256", "seal_id"))
                or not all(type(m[k]) is int and m[k] >= 0 for k in ("offset", "length", "plaintext_len"))):
            raise FormatError("pack: manifest entry has the wrong shape")
        e = PackEntry(m["model_id"], m["offset"], m["length"], m["sha256"], m["plaintext_len"], m["seal_id"])
        if e.model_id in entries:
            raise FormatError(f"pack: model id {e.model_id!r} appears twice")
        if e.offset != end or e.length <= 0:
            raise FormatError("pack: manifest byte ranges are not contiguous")
        end = e.offset + e.length
        entries[e.model_id] = e
    if end != blob_area:
        raise IntegrityError("pack: file size does not match its manifest (truncated or extended)")
    if not entries:
        raise FormatError("pack: no models")
    return entries


class SealedReader:
    def __init__(self, fd: int, start: int, length: int, sha256: str, model_id: str) -> None:
        self._fd, self._pos, self._end = fd, start, start + length
        self.length = length
        self._expected = sha256
        self._model_id = model_id
        # On the worker thread, overlapping the caller's decryption (background_digest.py).
        self._h = BackgroundDigest()

    def read(self, n: int) -> bytes:
        n = max(0, min(n, self._end - self._pos))
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        self._h.update(data)
        return data

    def verify(self) -> None:
        if self._pos != self._end or self._h.hexdigest() != self._expected:
            raise IntegrityError(f"pack: sealed model {self._model_id!r} does not match the pack manifest (tampered)")
