"""Streaming bounds of the sealed-model format, and the key cache's TTL."""

import io
import os
import tracemalloc

from app.keycache import TtlCache
from sesemi.errors import UnavailableError
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


def test_ttl_cache_ends_a_key_after_its_stated_uses_with_the_clock_stalled():
    """Issue 13 item 4: the count holds when the clock (the host's) does not move."""
    c = TtlCache(60, clock=lambda: 100.0)
    c.put("k", b"v", max_uses=2)
    assert c.get("k") == b"v" and c.get("k") == b"v"
    assert c.get("k") is None
    c.put("k", b"v", max_uses=0)  # a release of one use, already spent by its fetch
    assert c.get("k") is None


def test_a_forged_header_costs_one_chunk_before_its_refusal(tmp_path):
    """A header claiming 512 MiB, in a (sparse) file that really is that long:
    the old code allocated the whole claim before the first tag failed."""
    import pytest

    from sesemi.errors import IntegrityError

    claim = 512 << 20
    header = sealed_model._encode_header("m", sealed_model.DEFAULT_CHUNK, claim)
    forged = tmp_path / "forged.sealed"
    with open(forged, "wb") as f:
        f.write(header.raw)
        f.truncate(header.sealed_len)  # junk (zeros) where the chunks belong
    with open(forged, "rb") as f:
        tracemalloc.start()
        with pytest.raises(IntegrityError, match="chunk 0 does not authenticate"):
            sealed_model.open_stream(f.read, header.sealed_len, sealed_model.new_model_key(), "m")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 6 * sealed_model.DEFAULT_CHUNK  # a few chunk buffers, not the 512 MiB claimed


def test_pack_manifest_plaintext_len_must_match_what_the_blob_holds(tmp_path, monkeypatch):
    """The memory budget is sized from the manifest before decryption: a
    manifest that overstates (evicting every model) or understates (loading
    past the budget) a model's size is refused when the pack is opened."""
    import pytest

    from sesemi import pack as pack_mod
    from sesemi.errors import IntegrityError

    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(10_000))
    sealed_model.seal_file(src, tmp_path / "m.sealed", sealed_model.new_model_key(), "m")
    pack_mod.build(tmp_path / "ok.pack", [tmp_path / "m.sealed"])
    pack_mod.Pack(tmp_path / "ok.pack").close()
    real = pack_mod.PackEntry
    for lie in (1 << 40, 1):
        monkeypatch.setattr(pack_mod, "PackEntry",
                            lambda mid, off, length, sha, plen, seal, lie=lie: real(mid, off, length, sha, lie, seal))
        pack_mod.build(tmp_path / "lying.pack", [tmp_path / "m.sealed"])
        monkeypatch.setattr(pack_mod, "PackEntry", real)
        with pytest.raises(IntegrityError, match="disagrees with its sealed header"):
            pack_mod.Pack(tmp_path / "lying.pack")


class _RefusingKs:
    """A key service that attests anyone and refuses every release, recording the user ids asked for."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def nonce(self, deadline):
        return os.urandom(32)

    def attest(self, nonce, evidence, public_key, deadline):
        return "token", 600

    def keys(self, token, model_id, user_id, want_model, deadline, seal_id=None):
        from sesemi.errors import AccessDenied

        self.calls.append(user_id)
        raise AccessDenied("not authorised for this model, or no request key")

    def roster(self, token, model_id, since, after, deadline):
        self.calls.append(("roster", since))
        return {"model_id": model_id, "seq": 1, "after": after, "records": "", "next": None}


def test_enclave_session_state_does_not_grow_with_unauthenticated_user_ids():
    """Item 10: user ids come from unauthenticated envelopes; refused fetches
    for 2,000 of them leave the session's locks and caches as they were."""
    import pytest

    from app.enclave_session import EnclaveSession
    from sesemi.attestation.sim import SimBackend
    from sesemi.errors import AccessDenied

    calls: list = []
    session = EnclaveSession(SimBackend("ab" * 32), _RefusingKs(calls), key_ttl_s=60)
    locks = list(session._fetch_locks)
    for i in range(2000):
        with pytest.raises((AccessDenied, UnavailableError)):
            session.keys("m", f"user-{i:05d}", need_model_key=False)
    assert session._fetch_locks == locks
    assert all(c[0] == "roster" for c in calls)  # refused on the roster: no key release asked for
    assert session.cache._items == {}
    assert len(session.refusals) <= 4096
