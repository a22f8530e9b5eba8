"""The rosters of this action's models (sesemi/roster.py): who may send each
model requests, so that the action refuses everyone else itself, without the
key service and without a budget junk could spend (docs/protocol.md,
"Refusing without the key service").

A roster is fetched whole on first use (its first page comes with the model
key), then kept fresh by its changes since the log size (tree size) it was read at:
every `refresh_s`, and at most once every `early_s` when a request names a
user it does not list, or a request-key version newer than the one it lists
(a user granted or re-enrolled since the last refresh is then served within
`early_s`). A roster not refreshed for `max_age_s` (the key TTL) is dropped,
and with none the action refuses everyone alike, retryably.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sesemi import roster
from sesemi.errors import AccessDenied, FormatError, SesemiError, UnavailableError
from sesemi.timeouts import Deadline

# (model id, since, after, deadline) -> the key service's answer
log = logging.getLogger("sesemi.action")

Fetch = Callable[[str, "int | None", str, Deadline], dict]

EARLY_S = 1.0
# Paging a whole roster in may take longer than one request's key-service
# budget (10^6 members: 245 pages); the request that started it waits this
# long at most, and others retry meanwhile (docs/protocol.md).
WHOLE_ROSTER_S = 300.0


@dataclass
class _Held:
    roster: roster.Roster
    seq: int          # the log tree size it was read at: changes from there are fetched next
    fetched_at: float


class RosterBook:
    def __init__(self, fetch: Fetch, max_age_s: float, clock: Callable[[], float] = time.monotonic,
                 early_s: float = EARLY_S) -> None:
        self._fetch = fetch
        self.max_age_s = max_age_s
        self.refresh_s = max_age_s / 2
        self.early_s = min(early_s, self.refresh_s)
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, threading.Lock] = {}  # per model of the pack (checked before we are asked)
        self._guard = threading.Lock()
        self.refreshes = 0

    def _lock(self, model_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_id, threading.Lock())

    def holds(self, model_id: str) -> bool:
        held = self._held.get(model_id)
        return held is not None and self.clock() - held.fetched_at < self.max_age_s

    def seed(self, model_id: str, first_page: Any, deadline: Deadline) -> None:
        """A roster page that came with a model key: the roster, if none is held."""
        if self.holds(model_id) or not isinstance(first_page, dict):
            return
        with self._lock(model_id):
            if not self.holds(model_id):
                self._held[model_id] = self._whole(model_id, first_page, self.clock(), deadline)

    def version_of(self, model_id: str, user_id: str, key_version: int | None, deadline: Deadline) -> int:
        """The listed request-key version of `user_id`; AccessDenied, the one
        answer for every refused user, when the roster does not list them."""
        held = self._current(model_id, deadline)
        v = held.roster.version_of(user_id)
        if (v is None or key_version is not None and key_version > v) and \
                self.clock() - held.fetched_at >= self.early_s:
            held = self._refresh(model_id, deadline, held, self.early_s)
            v = held.roster.version_of(user_id)
        if v is None:
            raise AccessDenied("not on this model's roster")
        return v

    def _current(self, model_id: str, deadline: Deadline) -> _Held:
        held = self._held.get(model_id)
        if held is not None and self.clock() - held.fetched_at < self.refresh_s:
            return held
        return self._refresh(model_id, deadline, held, self.refresh_s)

    def _refresh(self, model_id: str, deadline: Deadline, seen: _Held | None, min_age_s: float) -> _Held:
        """One refresh however many threads ask; a failed one keeps a roster
        younger than `max_age_s`, else refuses retryably (everyone alike)."""
        lock = self._lock(model_id)
        if not lock.acquire(timeout=deadline.left()):
            raise deadline.expired()
        try:
            held = self._held.get(model_id)
            if held is not None and (held is not seen or self.clock() - held.fetched_at < min_age_s):
                return held  # another thread refreshed it meanwhile
            now = self.clock()
            try:
                fresh = self._changes(model_id, held, now, deadline) if held is not None else \
                    self._whole(model_id, self._fetch(model_id, None, "", deadline), now, deadline)
            except (SesemiError, OSError) as exc:
                # The key service's reason (no request data): a refused answer, a forked log...
                log.warning("roster of model %s not refreshed: %s: %s", model_id, type(exc).__name__, exc)
                if held is not None and now - held.fetched_at < self.max_age_s:
                    return held
                self._held.pop(model_id, None)
                raise UnavailableError(f"this model's roster could not be fetched ({type(exc).__name__}); "
                                       "retry") from None
            self._held[model_id] = fresh
            self.refreshes += 1
            return fresh
        finally:
            lock.release()

    def _changes(self, model_id: str, held: _Held, now: float, deadline: Deadline) -> _Held:
        answer = self._fetch(model_id, held.seq, "", deadline)
        if answer.get("since") != held.seq:  # too far behind: the key service sent the roster's first page
            return self._whole(model_id, answer, now, deadline)
        seq = _seq(answer, model_id)
        if seq < held.seq:
            raise FormatError("roster changes from an older state than the roster held")
        held.roster.add(roster.decode(answer.get("records")))
        return _Held(held.roster, seq, now)

    def _whole(self, model_id: str, answer: dict, now: float, deadline: Deadline) -> _Held:
        """All pages from this first one. Each page is read at its own state
        version; the roster counts as read at the first (oldest) one, so the
        next refresh's changes cover writes made while paging."""
        raws, seq = [], _seq(answer, model_id)
        deadline = Deadline(WHOLE_ROSTER_S, "roster pages", time.monotonic)
        while True:
            raws.append(roster.decode_raw(answer.get("records")))
            if sum(map(len, raws)) > roster.MAX_MEMBERS * roster.RECORD:
                raise FormatError(f"a roster of more than {roster.MAX_MEMBERS} members is refused")
            nxt = answer.get("next")
            if nxt is None:
                return _Held(roster.Roster.from_raw(model_id, raws), seq, now)
            if not isinstance(nxt, str) or answer.get("after") is not None and nxt <= answer["after"]:
                raise FormatError("roster page cursor does not advance")
            answer = self._fetch(model_id, None, nxt, deadline)
            seq = min(seq, _seq(answer, model_id))


def _seq(answer: dict, model_id: str) -> int:
    seq = answer.get("seq")
    if answer.get("model_id") != model_id or type(seq) is not int or seq < 0:
        raise FormatError("roster answer for another model, or without a log size")
    return seq
