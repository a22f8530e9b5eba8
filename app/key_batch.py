"""Request keys fetched together: after a burst or a restart, the users of one
model whose keys this enclave does not hold share one key-service call
(`POST /v1/enclave/request-keys`; docs/keyservice.md, "Throughput").

Leader and followers, per model, with no timer: the first miss finding no call
under way for its model makes the call for every user queued by then (up to
`max_users`); misses that arrive meanwhile queue, and the first of them makes
the next call. An idle enclave fetches each key at once. Only users the
model's roster lists reach this point (app/rosters.py), so junk cannot fill a
batch; the table of models is bounded by the pack.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sesemi.errors import AccessDenied, FormatError, TimeoutExpired
from sesemi.timeouts import Deadline

FetchMany = Callable[[str, list[str], Deadline], dict]


@dataclass
class _Waiter:
    user_id: str
    deadline: Deadline
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    answer: dict[str, Any] | None = None
    error: BaseException | None = None


@dataclass
class _Model:
    queue: list[_Waiter] = field(default_factory=list)
    calling: bool = False


class RequestKeyBatcher:
    def __init__(self, fetch_many: FetchMany, max_users: int = 64, max_models: int = 4096) -> None:
        self._fetch_many = fetch_many
        self.max_users = max_users
        self.max_models = max_models
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    def fetch(self, model_id: str, user_id: str, deadline: Deadline) -> dict[str, Any]:
        """This user's release: {request_key, request_key_version, max_requests};
        AccessDenied when the key service refused the user."""
        w = _Waiter(user_id, deadline)
        with self._lock:
            m = self._models.get(model_id)
            if m is None:
                if len(self._models) >= self.max_models:
                    self._models = {k: v for k, v in self._models.items() if v.calling or v.queue}
                m = self._models[model_id] = _Model()
            m.queue.append(w)
            lead = not m.calling
            m.calling = True
        if not lead:
            if not w.done.wait(max(0.0, deadline.end - deadline.clock())):
                with self._lock:  # leadership may have been handed over just now: then lead
                    if not w.lead:
                        if w in m.queue:
                            m.queue.remove(w)
                        raise TimeoutExpired(f"key release: no batch answered within the request's budget "
                                             f"({deadline.what})", bound="budget")
            if not w.lead:
                return self._result(w)
        self._lead(model_id, m, deadline)
        return self._result(w)

    @staticmethod
    def _result(w: _Waiter) -> dict[str, Any]:
        if w.error is not None:
            raise w.error
        assert w.answer is not None
        return w.answer

    def _lead(self, model_id: str, m: _Model, deadline: Deadline) -> None:
        with self._lock:
            batch, m.queue = m.queue[:self.max_users], m.queue[self.max_users:]
        users = list(dict.fromkeys(w.user_id for w in batch))
        try:
            body = self._fetch_many(model_id, users, deadline)
            self._hand_out(body, batch)
        except BaseException as exc:  # noqa: BLE001 - every waiter of the batch gets it
            for w in batch:
                w.error = exc
        for w in batch:
            w.done.set()
        with self._lock:
            if not m.queue:
                m.calling = False
                return
            # The next call runs under its leader's budget and serves the next batch:
            # the waiter of that batch with the most budget left leads, so no one's
            # call ends on a shorter budget than its own (the oldest has the least).
            nxt = max(m.queue[:self.max_users], key=lambda w: w.deadline.end)
            nxt.lead = True   # under the lock: a waiter that times out checks it there
        nxt.done.set()

    @staticmethod
    def _hand_out(body: dict, batch: list[_Waiter]) -> None:
        answers = body.get("users")
        if not isinstance(answers, dict):
            raise FormatError("key release (batch): no per-user answers")
        for w in batch:
            a = answers.get(w.user_id)
            if not isinstance(a, dict):
                w.error = FormatError("key release (batch): a user asked for is not answered")
            elif "refused" in a:
                w.error = AccessDenied("refused by the key service")
            else:
                w.answer = {"request_key": a.get("request_key"), "request_key_version": a.get("request_key_version"),
                            "max_requests": body.get("max_requests")}
