"""The pack digest on its worker thread (sesemi/background_digest.py): the
same digest as hashlib, one thread for the whole process, a bounded number of
chunks waiting, and a bounded wait that names its bound."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from sesemi import background_digest
from sesemi.background_digest import BackgroundDigest
from sesemi.errors import UnavailableError
from sesemi.pack import Pack, build
from sesemi import sealed_model

from .test_pack_tamper_order import DIGITS


def test_the_digest_is_hashlibs_over_the_same_bytes():
    chunks = [os.urandom(n) for n in (0, 1, 4096, 1 << 20, 7)]
    d = BackgroundDigest(max_in_flight=2)
    for c in chunks:
        d.update(c)
    assert d.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert d.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()  # idempotent
    with pytest.raises(ValueError):
        d.update(b"late")


def test_concurrent_loads_share_one_worker_thread_and_all_verify(tmp_path):
    key = sealed_model.new_model_key()
    sealed = []
    for i in range(4):
        sealed_model.seal_file(DIGITS, tmp_path / f"m{i}.sealed", key, f"m{i}", chunk_size=4096)
        sealed.append(tmp_path / f"m{i}.sealed")
    build(tmp_path / "p.pack", sealed)
    pack = Pack(tmp_path / "p.pack")
    errors: list[BaseException] = []

    def load(mid: str) -> None:
        try:
            for _ in range(5):
                r = pack.reader(mid)
                sealed_model.open_stream(r.read, r.length, key, mid)
                r.verify()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(f"m{i}",)) for i in range(4)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    pack.close()
    assert not errors
    assert sum(t.name == "sesemi-digest" for t in threading.enumerate()) == 1


def test_a_stalled_worker_holds_back_the_reader_and_the_wait_is_bounded(monkeypatch):
    """With the worker stalled, update() stops after max_in_flight chunks instead
    of queueing the whole ciphertext, and both waits end with their bound named."""
    gate = threading.Event()
    real = BackgroundDigest._consume

    def slow(self, item):
        gate.wait(10)
        real(self, item)

    monkeypatch.setattr(BackgroundDigest, "_consume", slow)
    d = BackgroundDigest(max_in_flight=2, timeout_s=0.3)
    d.update(b"a")  # the worker takes this one and stalls on it
    d.update(b"b")
    t0 = time.monotonic()
    with pytest.raises(UnavailableError, match="did not keep up within 0.3 s"):
        for _ in range(3):
            d.update(b"c")
    assert time.monotonic() - t0 < 5
    with pytest.raises(UnavailableError, match="did not finish within 0.3 s"):
        d.hexdigest()
    gate.set()
    monkeypatch.setattr(BackgroundDigest, "_consume", real)
    e = BackgroundDigest()
    e.update(b"x")
    assert e.hexdigest() == hashlib.sha256(b"x").hexdigest()
    assert background_digest._WORKER._thread is not None


def test_without_a_worker_thread_the_digest_runs_inline(monkeypatch):
    """An enclave out of thread slots (Occlum: every TCS busy) cannot start the
    worker: the load still verifies, hashing on its own thread."""
    monkeypatch.setattr(background_digest, "_WORKER", background_digest._Worker())

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    chunks = [os.urandom(4096) for _ in range(6)]
    d = BackgroundDigest(max_in_flight=2)
    for c in chunks:
        d.update(c)
    assert d.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
