"""SHA-256 of a stream, computed on a worker thread while the caller goes on.

A model load reads each sealed chunk, digests it for the pack manifest and
decrypts it. hashlib releases the GIL on large buffers and `cryptography`'s
AES-GCM does not, so on one thread the two run back to back (ResNet50: a
64 ms digest beside a 26 ms decryption), and on two they overlap
(docs/performance.md, "Cold start"). The digest still covers exactly the
bytes the caller decrypts: the same immutable `bytes` objects are handed over.

One worker thread serves the whole process, started on first use: the
number of threads a load can add is one, whatever the number of concurrent
loads (Occlum sizes its TCS count from the thread count; occlum_instance/
sizing.py counts it). At most `max_in_flight` chunks of one stream wait for
the worker, so a load still peaks at its plaintext plus a few chunks.
"""

from __future__ import annotations

import hashlib
import queue
import threading

from .errors import UnavailableError

_DONE = object()


class _Worker:
    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[tuple[BackgroundDigest, object]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, digest: "BackgroundDigest", item: object) -> None:
        """Raises RuntimeError when no thread can be started (an enclave out of
        TCSs); nothing is queued then."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._loop, name="sesemi-digest", daemon=True)
                thread.start()
                self._thread = thread
        self._jobs.put((digest, item))

    def _loop(self) -> None:
        while True:
            digest, item = self._jobs.get()
            digest._consume(item)


_WORKER = _Worker()


class BackgroundDigest:
    """`update()` returns at once (unless `max_in_flight` chunks are pending);
    `hexdigest()` waits for the worker, at most `timeout_s`."""

    def __init__(self, max_in_flight: int = 4, timeout_s: float = 60.0) -> None:
        self._h = hashlib.sha256()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._finished = threading.Event()
        self._failed: BaseException | None = None
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._closed = False
        self._inline = False  # no worker thread could be started: hash on the caller's thread

    def update(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("update after hexdigest")
        if not data:
            return
        if self._inline:
            self._h.update(data)
            return
        if not self._slots.acquire(timeout=self._timeout_s):
            raise UnavailableError(f"model digest: the digest worker did not keep up within {self._timeout_s:g} s")
        try:
            _WORKER.submit(self, bytes(data))
        except RuntimeError:
            self._slots.release()
            self._go_inline()
            self._h.update(data)

    def _go_inline(self) -> None:
        """Wait for what the worker holds of this stream (its order matters), then hash here."""
        taken = 0
        try:
            for _ in range(self._max_in_flight):
                if not self._slots.acquire(timeout=self._timeout_s):
                    raise UnavailableError(f"model digest: the digest worker did not finish within "
                                           f"{self._timeout_s:g} s")
                taken += 1
        finally:
            for _ in range(taken):
                self._slots.release()
        self._inline = True

    def hexdigest(self) -> str:
        if not self._closed:
            self._closed = True
            if self._inline:
                self._finished.set()
            else:
                try:
                    _WORKER.submit(self, _DONE)
                except RuntimeError:
                    self._go_inline()
                    self._finished.set()
        if not self._finished.wait(self._timeout_s):
            raise UnavailableError(f"model digest: the digest worker did not finish within {self._timeout_s:g} s")
        if self._failed is not None:
            raise UnavailableError(f"model digest failed: {type(self._failed).__name__}")
        return self._h.hexdigest()

    def _consume(self, item: object) -> None:
        # Runs on the worker: never raise, always give the slot back.
        if item is _DONE:
            self._finished.set()
            return
        try:
            if self._failed is None:
                self._h.update(item)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - MemoryError; reported by hexdigest
            self._failed = exc
        finally:
            self._slots.release()
