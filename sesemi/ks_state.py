"""Clients as witnesses of the key service's state version.

Every key-service answer carries, under its signature, the head of the
service's ledger: "SEQ.HEAD" (keyservice/store.py). SEQ only grows. A client
remembers the highest it has seen for each key service (named by its signing
key) and refuses an answer with a lower one, or with the same SEQ and another
head: the service's database was rolled back, or forked. This covers what the
replicas cannot see themselves: a single node, or every replica restarted at
once on a restored database (docs/keyservice.md). `FileStateWitness` keeps
the marks in $SESEMI_HOME/ks_state.json, so they outlive the process.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from pathlib import Path

from .encoding import canonical_json, json_loads
from .errors import FormatError, IntegrityError, RollbackDetected
from .identity import write_private_file

_STATE = re.compile(r"([0-9]{1,19})\.([0-9a-f]{64})")


def parse(state: str | None) -> tuple[int, str]:
    m = _STATE.fullmatch(state or "")
    if m is None:
        raise IntegrityError("key-service answer carries no valid state version (X-Sesemi-KS-State)")
    return int(m.group(1)), m.group(2)


class StateWitness:
    """In memory (an action, or a program without $SESEMI_HOME)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, str]] = {}

    def _load(self) -> dict[str, tuple[int, str]]:
        return self._seen

    def _save(self, seen: dict[str, tuple[int, str]]) -> None:
        self._seen = seen

    def _exclusive(self):
        return _NoLock()

    def highest(self, service: str) -> tuple[int, str] | None:
        with self._lock, self._exclusive():
            return self._load().get(service)

    def observe(self, service: str, state: str | None, what: str,
                floor: tuple[int, str] | None = None) -> int:
        """`floor`: the highest version seen when the request was sent (answers to
        concurrent requests may arrive out of order; none may be older than that)."""
        seq, head = parse(state)
        with self._lock, self._exclusive():
            seen = self._load()
            known = seen.get(service)
            # An answer newer than the floor but older than `known` was overtaken by another.
            prev = floor if floor is not None else known
            if prev is not None and seq < prev[0]:
                raise RollbackDetected(
                    f"{what}: the key service answered with state version {seq}, older than version {prev[0]} "
                    "that this client has already seen: its database was rolled back (restored from an older "
                    "copy), so revocations and policy changes since may be undone. Do not use it; tell its "
                    "operator (docs/keyservice.md)")
            if known is not None and seq == known[0] and head != known[1]:
                raise RollbackDetected(
                    f"{what}: the key service answered with state version {seq} but another history than the "
                    "one this client has seen (a forked or replaced database)")
            if known is None or seq > known[0]:
                seen = {**seen, service: (seq, head)}
                self._save(seen)
        return seq


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class FileStateWitness(StateWitness):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _load(self) -> dict[str, tuple[int, str]]:
        if not self.path.exists():
            return {}
        try:
            d = json_loads(self.path.read_bytes())
            return {k: (int(v["seq"]), str(v["head"])) for k, v in d.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FormatError(f"{self.path} is damaged: it holds the key-service state versions this client "
                              "has seen; restore it from a backup (deleting it forgets them)") from None

    def _save(self, seen: dict[str, tuple[int, str]]) -> None:
        write_private_file(self.path, canonical_json({k: {"seq": s, "head": h} for k, (s, h) in seen.items()}))

    def _exclusive(self):
        return _FileLock(self.path.with_name(self.path.name + ".lock"))


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
