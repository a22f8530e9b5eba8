"""Group commit of log entries: releases (and refused releases) that arrive
together share one write transaction, one lock hold and one new tree head
(docs/keyservice.md, "Throughput").

Leader and followers, with no timer: the first caller to find no commit under
way leads; it takes every entry queued when it starts (up to `max_batch`),
appends them in one transaction and wakes their callers once the commit is
durable. Entries that arrive while it commits queue up, and the first of
them leads the next batch. An idle service commits each entry at once (a
batch of one, no added latency); a busy one commits as many as arrived during
the previous commit. No answer leaves before its entry is durable: `append`
returns only after the commit, or raises what the commit raised.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from sesemi.errors import TimeoutExpired


@dataclass
class _Pending:
    entries: Sequence[Mapping[str, Any]]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    leaves: list[int] | None = None
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, commit: Callable[[Sequence[Mapping[str, Any]]], list[int]], max_batch: int = 256,
                 wait_s: float = 30.0, observe: Callable[[int, float], None] | None = None) -> None:
        """`commit(entries)`: append them in one durable transaction, returning
        their leaf indices. `observe(batch size, queue wait s)`: for metrics."""
        self._commit = commit
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._observe = observe
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    def append(self, entry: Mapping[str, Any]) -> int:
        """The entry's leaf index, once it is durable."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Several entries of one caller, committed together; their leaf indices."""
        p = _Pending(list(entries))
        t0 = time.monotonic()
        with self._lock:
            self._queue.append(p)
            lead = not self._leading
            if lead:
                self._leading = True
        if not lead:
            if not p.done.wait(self.wait_s):
                with self._lock:  # leadership may have been handed over just now: then lead
                    if not p.lead:
                        if p in self._queue:
                            self._queue.remove(p)
                        raise TimeoutExpired(f"log commit: no commit within {self.wait_s:g} s (the database "
                                             "is stalled)", bound="log commit")
            if not p.lead:
                return self._result(p)
        self._lead(time.monotonic() - t0)
        return self._result(p)

    @staticmethod
    def _result(p: _Pending) -> list[int]:
        if p.error is not None:
            raise p.error
        assert p.leaves is not None
        return p.leaves

    def _lead(self, waited_s: float) -> None:
        with self._lock:
            n, take = 0, 0
            for take, p in enumerate(self._queue):
                if take and n + len(p.entries) > self.max_batch:
                    break
                n += len(p.entries)
            else:
                take = len(self._queue)
            batch, self._queue = self._queue[:take], self._queue[take:]
        try:
            leaves = self._commit([e for p in batch for e in p.entries])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
            for p in batch:
                p.error = exc
        else:
            at = 0
            for p in batch:
                p.leaves, at = leaves[at:at + len(p.entries)], at + len(p.entries)
        if self._observe is not None:
            self._observe(n, waited_s)
        for p in batch:
            p.done.set()
        with self._lock:
            if not self._queue:
                self._leading = False
                return
            nxt = self._queue[0]  # it leads the next batch: the entries that queued meanwhile
            nxt.lead = True       # under the lock: a waiter that times out checks it there
        nxt.done.set()
