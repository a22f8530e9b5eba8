"""Streaming bounds of the sealed-model format, and the key cache's TTL."""

import io
import os
import tracemalloc

from app.keycache import TtlCache
from sesemi import sealed_model


def test_open_holds_one_plaintext_copy(tmp_path):
    size = 24 << 20
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(size))
    key = sealed_model.new_model_key()
    sealed = tmp_path / "m.sealed"

    tracemalloc.start()
    sealed_model.seal_file(src, sealed, key, "m")
    _, seal_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seal_peak < 4 * sealed_model.DEFAULT_CHUNK  # sealing streams chunk by chunk

    with open(sealed, "rb") as f:
        tracemalloc.start()
        out = sealed_model.open_stream(f.read, os.path.getsize(sealed), key, "m")
        _, open_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert len(out) == size and isinstance(out, bytes)
    # Decrypted straight into the bytes LiteRT takes: no second plaintext copy at the end.
    assert open_peak < size + 4 * sealed_model.DEFAULT_CHUNK
    assert out == src.read_bytes()


def test_ttl_cache_expires_by_injected_clock():
    now = [100.0]
    c = TtlCache(60, clock=lambda: now[0])
    c.put("k", b"v")
    assert c.get("k") == b"v"
    now[0] += 59.9
    assert c.get("k") == b"v"
    now[0] += 0.2
    assert c.get("k") is None
