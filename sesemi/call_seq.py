"""The client's per-principal sequence numbers for signed calls (signed_call.py).

`FileCallCounter` keeps them under $SESEMI_HOME/call_seq/PID (0600, replaced
atomically, fsynced before the call is sent), so numbers never repeat across
runs, and takes an flock so concurrent `sesemi` processes never draw the same
number. A number is spent when drawn: a call that fails is never resent
under it.

`sending(pid)` serializes a principal's signed calls across threads and, for
the file counter, across processes sharing the home: the key service takes
no late number, and the client resends a call refused as stale above the
last accepted one, so a call the network held while another process's later
call went through would otherwise land after it (a grant after the revoke
that followed it). One counter serves every key service (a key service only needs the
numbers to increase; gaps are harmless).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator

from .errors import FormatError, TimeoutExpired
from .identity import is_principal_id, write_private_file
from .signed_call import MAX_SEQ


class CallCounter:
    """In memory: for programs without a $SESEMI_HOME. A fresh process starts at
    1 and, when the key service says that is stale, skips past the last number
    it accepted (one extra round trip)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._sending: dict[str, threading.Lock] = {}  # per principal: this program's own identities

    def _read(self, pid: str) -> int:
        return self._last.get(pid, 0)

    def _write(self, pid: str, value: int) -> None:
        self._last[pid] = value

    def _update(self, pid: str, at_least: int) -> int:
        if not is_principal_id(pid):
            raise FormatError("malformed principal id")
        with self._lock, self._exclusive(pid):
            value = max(self._read(pid), at_least) + 1
            if value > MAX_SEQ:
                raise FormatError("call sequence number exhausted")
            self._write(pid, value)
            return value

    def _exclusive(self, pid: str) -> ContextManager[None]:
        return _NoLock()

    @contextmanager
    def sending(self, pid: str, wait_s: float) -> Iterator[None]:
        """Held while one signed call of `pid` is in flight (module docstring);
        waits at most `wait_s` for another to finish."""
        if not is_principal_id(pid):
            raise FormatError("malformed principal id")
        with self._lock:
            lock = self._sending.setdefault(pid, threading.Lock())
        if not lock.acquire(timeout=wait_s):
            raise TimeoutExpired(f"another signed call of {pid} in this program is still in flight "
                                 f"(waited {wait_s:.0f} s)", bound="budget")
        try:
            with self._sending_between_processes(pid, wait_s):
                yield
        finally:
            lock.release()

    def _sending_between_processes(self, pid: str, wait_s: float) -> ContextManager[None]:
        return _NoLock()

    def next(self, pid: str) -> int:
        """A number above every one drawn before for `pid`, recorded before it is used."""
        return self._update(pid, 0)

    def next_after(self, pid: str, last_accepted: int) -> int:
        """A number above `last_accepted` too (the key service's signed answer)."""
        return self._update(pid, last_accepted)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class _BoundedFileLock(_FileLock):
    """An flock waited for at most `wait_s` (polled: flock itself has no timeout)."""

    def __init__(self, path: Path, wait_s: float, what: str) -> None:
        super().__init__(path)
        self.wait_s, self.what = wait_s, what

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise TimeoutExpired(f"{self.what} (waited {self.wait_s:.0f} s on {self.path})",
                                         bound="budget") from None
                time.sleep(0.02)


class FileCallCounter(CallCounter):
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.directory = Path(directory)

    def _path(self, pid: str) -> Path:
        return self.directory / pid

    def _exclusive(self, pid: str) -> ContextManager[None]:
        return _FileLock(self.directory / f"{pid}.lock")

    def _sending_between_processes(self, pid: str, wait_s: float) -> ContextManager[None]:
        return _BoundedFileLock(self.directory / f"{pid}.sending", wait_s,
                                "another sesemi process of this identity has a signed call in flight")

    def _read(self, pid: str) -> int:
        try:
            text = self._path(pid).read_text().strip()
        except FileNotFoundError:
            return 0
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise FormatError(f"{self._path(pid)} is damaged (expected a decimal number): delete it, and the "
                              "key service's next answer resets it")
        return int(text)

    def _write(self, pid: str, value: int) -> None:
        write_private_file(self._path(pid), str(value).encode())
