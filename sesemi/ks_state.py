"""Clients as witnesses of the key service's log.

Every key-service answer carries, under its signature, a signed checkpoint of
the service's log (an RFC 9162 Merkle tree: sesemi/ks_log.py) and a
consistency proof from the tree size the client said it holds. A witness
keeps the last checkpoint it accepted per key service (named by its signing
key) and accepts an answer only if the answer's tree provably extends it: a
restored, padded or forked database cannot produce that proof, however many
entries it appends. The refusal names both checkpoints.

Answers to concurrent requests may arrive out of order. None may be older
than the checkpoint held when its request was sent; and when the held
checkpoint moved while a request was out, the two are related by a proof
fetched from the service (`fetch`), so two answers from two forks are never
both accepted. `FileStateWitness` keeps the checkpoints (the signed notes
themselves) in $SESEMI_HOME/ks_state.json, so they outlive the process.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from . import checkpoint, ks_log, merkle
from .encoding import canonical_json, json_loads
from .errors import FormatError, IntegrityError, RollbackDetected, UnavailableError
from .identity import write_private_file

ProofFetcher = Callable[[int, int], list[bytes]]
_RETRIES = 3


@dataclass(frozen=True)
class Held:
    """A checkpoint a witness accepted."""

    size: int
    root: bytes
    note: str

    def short(self) -> str:
        return checkpoint.describe(self.size, self.root)


@dataclass(frozen=True)
class LogAnswer:
    """What an answer says about the log: its signed note and the proof it carries."""

    note: str
    proof_from: str
    proof: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> LogAnswer:
        return cls(ks_log.decode_note(headers.get(ks_log.H_CHECKPOINT)), headers.get(ks_log.H_PROOF_FROM, ""),
                   headers.get(ks_log.H_PROOF, ""))


def _fork(what: str, new: Held | checkpoint.Checkpoint, old: Held, why: str) -> RollbackDetected:
    return RollbackDetected(
        f"{what}: the key service's log at checkpoint ({new.short()}) does not extend the checkpoint this "
        f"client holds ({old.short()}): {why}. Its database was forked, or restored from an older copy and "
        "padded: revocations and policy changes since may be undone. Do not use it; tell its operator "
        "(docs/keyservice.md, \"The log\")")


class StateWitness:
    """In memory (an action, or a program without $SESEMI_HOME)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Held] = {}
        # Notes already verified: answers of one group commit carry the same one.
        self._notes: OrderedDict[tuple[bytes, str], checkpoint.Checkpoint] = OrderedDict()

    def _open(self, note: str, signing_public: bytes, vouched: bool) -> checkpoint.Checkpoint:
        with self._lock:
            cp = self._notes.get((signing_public, note))
        if cp is None:
            if vouched:  # the answer's signature, by the same key, covered this very note
                cp = checkpoint.parse(note)[0]
                if cp.origin != checkpoint.origin_for(signing_public):
                    raise IntegrityError(f"checkpoint is for log {cp.origin!r}, not this key service's")
            else:
                cp = checkpoint.open_(note, signing_public)
            with self._lock:
                self._notes[(signing_public, note)] = cp
                while len(self._notes) > 64:
                    self._notes.popitem(last=False)
        return cp

    def _load(self) -> dict[str, Held]:
        return self._seen

    def _save(self, seen: dict[str, Held]) -> None:
        self._seen = seen

    def _exclusive(self) -> Any:
        return _NoLock()

    def held(self, service: str) -> Held | None:
        with self._lock, self._exclusive():
            return self._load().get(service)

    def observe(self, service: str, signing_public: bytes, answer: LogAnswer, sent: Held | None, what: str,
                fetch: ProofFetcher | None = None, vouched: bool = False) -> Held:
        """Accept the answer's checkpoint, or raise RollbackDetected naming both.
        `sent`: the checkpoint held when the request went out (its size was sent).
        `vouched`: the caller verified a signature by `signing_public` over this
        note (the response signature covers it), so its own need not be checked
        again; a note kept in a file is checked whenever it is read back."""
        cp = self._open(answer.note, signing_public, vouched)
        new = Held(cp.size, cp.root, answer.note)
        if sent is not None:
            self._check_sent(new, sent, answer, what)
        for _ in range(_RETRIES):
            with self._lock, self._exclusive():
                known = self._load().get(service)
                if known is None or known == sent or known.size == new.size:
                    if known is not None and known.size == new.size and known.root != new.root:
                        raise _fork(what, new, known, "same size, another root")
                    self._record(service, known, new)
                    return new
            # The held checkpoint moved while this request was out: relate the two by a proof.
            lo, hi = (known, new) if known.size < new.size else (new, known)
            if fetch is None:
                raise _fork(what, new, known, "no proof relates them")
            try:
                merkle.verify_consistency(lo.size, hi.size, lo.root, hi.root, fetch(lo.size, hi.size))
            except merkle.ProofError as exc:
                raise _fork(what, new, known, str(exc)) from None
            with self._lock, self._exclusive():
                if self._load().get(service) == known:
                    self._record(service, known, new)
                    return new
        raise UnavailableError(f"{what}: the key service's checkpoints moved {_RETRIES} times while this answer "
                               "was checked: retry")

    @staticmethod
    def _check_sent(new: Held, sent: Held, answer: LogAnswer, what: str) -> None:
        if new.size < sent.size:
            raise RollbackDetected(
                f"{what}: the key service answered from checkpoint ({new.short()}), older than the checkpoint "
                f"this client holds ({sent.short()}): its database was rolled back (restored from an older "
                "copy), so revocations and policy changes since may be undone. Do not use it; tell its operator "
                "(docs/keyservice.md, \"The log\")")
        if new.size == sent.size:
            if new.root != sent.root:
                raise _fork(what, new, sent, "same size, another root")
            return
        if answer.proof_from != str(sent.size):
            raise _fork(what, new, sent, f"the answer carries no consistency proof from size {sent.size}")
        try:
            merkle.verify_consistency(sent.size, new.size, sent.root, new.root, ks_log.decode_proof(answer.proof))
        except (merkle.ProofError, FormatError) as exc:
            raise _fork(what, new, sent, f"its consistency proof does not verify ({exc})") from None

    def _record(self, service: str, known: Held | None, new: Held) -> None:
        if known is None or new.size > known.size:
            self._save({**self._load(), service: new})


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class FileStateWitness(StateWitness):
    """Checkpoints in a file: each is kept as the signed note, re-verified when read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _load(self) -> dict[str, Held]:
        if not self.path.exists():
            return {}
        try:
            d = json_loads(self.path.read_bytes())
            out = {}
            for service, v in d.items():
                if "checkpoint" not in v:
                    continue  # a record from before checkpoints: it starts over from the next one (docs)
                cp = checkpoint.open_(v["checkpoint"], bytes.fromhex(service))
                out[service] = Held(cp.size, cp.root, v["checkpoint"])
            return out
        except (ValueError, KeyError, TypeError, AttributeError, FormatError, IntegrityError):
            raise FormatError(f"{self.path} is damaged: it holds the key-service checkpoints this client has "
                              "accepted; restore it from a backup (deleting it forgets them)") from None

    def _save(self, seen: dict[str, Held]) -> None:
        write_private_file(self.path, canonical_json({k: {"checkpoint": h.note} for k, h in seen.items()}))

    def _exclusive(self) -> Any:
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
