"""The live router: each request's model id picks a pack; the pack's pool
(router/policy.py) picks an action; the request is invoked there through
OpenWhisk's REST API (blocking). It waits in a FIFO queue, within a bound,
when the pool has no room, and retries a failed activation on another action
within `max_attempts`.

It sees ciphertext only: of the request it reads the envelope's `model_id`,
and it forwards the envelope and the action's answer unchanged. It never
logs a body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from sesemi.errors import FormatError, NotFound, SesemiError, UnavailableError
from sesemi.http_errors import parse_action_error
from sesemi.names import check_model_id
from sesemi.openwhisk import APPLICATION_ERROR, Activation, OpenWhiskClient

from .config import RouterConfig
from .policy import POLICIES, Pool
from .retry_budget import RetryBudget

log = logging.getLogger("sesemi.router")

# An action answering with one of these may be fine elsewhere (its pack copy
# is corrupt, its key service link is down): try another action.
RETRY_KINDS = {"UnavailableError", "ModelUnavailable"}


@dataclass
class _Waiter:
    model: str
    exclude: frozenset[str]
    event: threading.Event = field(default_factory=threading.Event)
    action: str | None = None


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Router:
    def __init__(self, config: RouterConfig, client: OpenWhiskClient | Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = config
        self.client = client
        self.clock = clock
        cls = POLICIES[config.policy_kind]
        self.pools: dict[str, Pool] = {p.name: cls(p.actions, p.policy or config.policy) for p in config.packs}
        self.pack_of = config.pack_of()
        self.queues: dict[str, deque[_Waiter]] = {p.name: deque() for p in config.packs}
        self.lock = threading.Lock()
        self.counters = {k: 0 for k in ("requests", "ok", "failed", "retries", "cold_activations", "queued",
                                         "queue_timeouts", "all_busy", "action_errors", "retries_unbudgeted")}
        self.retry_budget = RetryBudget(config.retry_percent, config.retry_min_per_s, clock)
        self._stop = threading.Event()
        threading.Thread(target=self._tick, name="claim-ticker", daemon=True).start()

    def _count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counters[key] += n

    # -- slots ----------------------------------------------------------------------------------

    def _acquire(self, pack: str, model: str, exclude: frozenset[str], deadline: float) -> str | None:
        pool, queue = self.pools[pack], self.queues[pack]
        with self.lock:
            if not queue:
                action = pool.acquire(model, self.clock(), exclude)
                if action is not None:
                    return action
                if not pool.queues:
                    self.counters["all_busy"] += 1
                    raise UnavailableError(f"All Busy: every action of pack {pack} is busy or claimed")
            if sum(len(q) for q in self.queues.values()) >= self.cfg.max_queue:
                raise UnavailableError(f"router queue is full ({self.cfg.max_queue} requests waiting)")
            waiter = _Waiter(model, exclude)
            queue.append(waiter)
            self.counters["queued"] += 1
        waiter.event.wait(max(0.0, deadline - self.clock()))
        with self.lock:
            if waiter.action is None:
                queue.remove(waiter)
            return waiter.action

    def _dispatch_locked(self, pack: str) -> None:
        pool, queue = self.pools[pack], self.queues[pack]
        now = self.clock()
        for w in list(queue):
            action = pool.acquire(w.model, now, w.exclude)
            if action is not None:
                w.action = action
                queue.remove(w)
                w.event.set()

    def _release(self, pack: str, model: str, action: str, exec_s: float | None) -> None:
        with self.lock:
            self.pools[pack].release(model, action, self.clock(), exec_s)
            self._dispatch_locked(pack)

    def _tick(self) -> None:
        """Claims lapse with time alone, not only when a request finishes."""
        while not self._stop.wait(0.05):
            with self.lock:
                now = self.clock()
                for pack, queue in self.queues.items():
                    if queue:
                        nxt = self.pools[pack].next_change(now)
                        if nxt is not None and nxt <= now + 0.05:
                            self._dispatch_locked(pack)

    def stop(self) -> None:
        self._stop.set()

    # -- requests -------------------------------------------------------------------------------

    def infer(self, value: Any) -> Reply:
        if not isinstance(value, dict):
            raise FormatError("body must be {\"value\": envelope}")
        model = check_model_id(value.get("model_id"))
        pack = self.pack_of.get(model)
        if pack is None:
            raise NotFound(f"model {model} is not served by this router")
        self._count("requests")
        self.retry_budget.deposit()
        t_arrival = self.clock()
        deadline = t_arrival + self.cfg.queue_timeout_s
        tried: list[str] = []
        last = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                action = self._acquire(pack, model, frozenset(tried), deadline)
            except UnavailableError as exc:
                self._count("failed")
                return self._unavailable(str(exc) + (f"; earlier failure: {last}" if last else ""))
            if action is None:
                self._count("queue_timeouts")
                self._count("failed")
                return self._unavailable(f"all actions of pack {pack} stayed busy for "
                                         f"{self.cfg.queue_timeout_s:g} s (queue bound)"
                                         + (f"; earlier failure: {last}" if last else ""))
            try:
                act = self.client.invoke(action, value, timeout_s=self.cfg.activation_timeout_s)
            except FormatError as exc:  # e.g. over the platform's payload limit: no other action helps
                self._release(pack, model, action, None)
                self._count("failed")
                return Reply(exc.http_status, {"error": str(exc), "kind": "FormatError"})
            except SesemiError as exc:
                last = f"action {action}: {exc}"
            except Exception:
                self._release(pack, model, action, None)
                raise
            else:
                if act.cold:
                    self._count("cold_activations")
                if act.success:
                    exec_s = self._exec_seconds(act)
                    self._release(pack, model, action, exec_s)
                    self._count("ok")
                    log.info("model %s -> %s: ok in %.0f ms%s (attempt %d)", model, action,
                             (self.clock() - t_arrival) * 1e3, " cold" if act.cold else "", attempt)
                    return Reply(200, act.result, {"X-Sesemi-Action": action, "X-Sesemi-Attempts": str(attempt)})
                refusal = self._refusal(act)
                if refusal is not None:
                    # The request itself was refused (access, integrity, format, replay):
                    # the same on any action, so not retried; the container stays warm.
                    self._release(pack, model, action, self._exec_seconds(act))
                    self._count("action_errors")
                    log.info("model %s -> %s: refused by the action (%s)", model, action,
                             refusal.body["error"].get("kind") if isinstance(refusal.body["error"], dict)
                             else act.status)
                    refusal.headers["X-Sesemi-Action"] = action
                    return refusal
                last = f"action {action}: {act.status}: {act.error}"
            self._release(pack, model, action, None)
            tried.append(action)
            if attempt < self.cfg.max_attempts:
                if not self.retry_budget.withdraw():  # a retry may not multiply what a flood costs
                    self._count("retries_unbudgeted")
                    break
                self._count("retries")
                log.warning("model %s: activation on %s failed (%s); retrying on another action", model,
                            action, last)
        self._count("failed")
        return self._unavailable(f"inference failed on {len(tried)} attempt(s) "
                                 f"({', '.join(tried)}); last: {last}")

    @staticmethod
    def _refusal(act: Activation) -> Reply | None:
        """An application error is the action's answer (docs/platform.md): its
        `error` value carries kind, status and message, and is forwarded as it
        is (a sealed refusal carries the user's envelope in it). A retryable
        kind (key service unreachable, a corrupt pack copy) is tried elsewhere;
        developer and platform errors are retried too (None)."""
        if act.status != APPLICATION_ERROR:
            return None
        err = act.result.get("error")
        parsed = parse_action_error(err)
        if parsed is None:  # the platform's own application error, e.g. a result over its limit
            return Reply(502, {"error": f"the platform refused the action's answer: {act.error}"})
        kind, status, _, _ = parsed
        if kind in RETRY_KINDS:
            return None
        return Reply(status, {"error": err})

    @staticmethod
    def _exec_seconds(act: Activation) -> float:
        """The model's execution time, without a cold start's initialisation."""
        if act.duration_ms:
            return max(0.0, (act.duration_ms - (act.init_ms or 0)) / 1000)
        return 0.0

    @staticmethod
    def _unavailable(msg: str) -> Reply:
        log.warning("503: %s", msg)
        return Reply(503, {"error": msg, "kind": "UnavailableError"}, {"Retry-After": "1"})

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "policy": self.cfg.policy_kind,
                "counters": dict(self.counters),
                "packs": {name: {"queued": len(self.queues[name]), "actions": pool.snapshot()}
                          for name, pool in self.pools.items()},
            }
