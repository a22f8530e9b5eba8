"""Routing policies: which action of a pack's pool serves a model's request.

Pure state machines with an injected clock, no I/O: the live router
(`router/service.py`) and the trace-driven simulator (`router/sim/`) run the
very same code. A pool answers `acquire(model, now)` with an action name, or
None when the request must wait (or, for the prototype's policy, fail);
every acquire is paired with one `release`.

- `PackedPool` (ours, docs/packing.md): a busy model (`claim_at` requests in
  flight on one action) claims that action; rare models share unclaimed
  actions, preferring one that served them recently (its containers likely
  hold the model decrypted), then the most recently used warm one; no action
  takes more than its container concurrency, so bursts spill over to warm
  actions instead of starting containers; a claim is released once the
  model has been idle for `release_multiple` x its last execution time; when
  no unclaimed action has room, a request borrows a claimed action with
  room; only when every action is at its limit does it wait (the caller
  queues, with a bound).
- `PrototypePool`: the SeSeMI prototype's FnPacker (docs/architecture.md §9).
- `PerModelPool`: one action per model, the baseline without packing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sesemi.errors import FormatError

_NEVER = float("-inf")


@dataclass(frozen=True)
class PolicyParams:
    claim_at: int = 2                 # in-flight requests of one model on one action that make it claim it
    release_multiple: float = 2.0     # claim released after idle > this x last execution time
    min_hold_s: float = 0.0           # ... and at least this long
    share_limit: int = 4              # in flight on one action: its container concurrency
    claimed_limit: int | None = None  # in flight on a claimed action; None: share_limit (see docs/packing.md)
    borrow: bool = True               # may a request use another model's claimed action with room?
    warm_s: float = 600.0             # how long the platform keeps an idle container (its keep-alive)
    affinity: int = 4                 # models remembered per action (~ what its containers keep loaded)

    def validate(self) -> "PolicyParams":
        if not isinstance(self.claim_at, int) or self.claim_at < 1:
            raise FormatError("policy.claim_at must be an integer >= 1")
        if not self.release_multiple > 0 or self.min_hold_s < 0 or self.warm_s < 0:
            raise FormatError("policy.release_multiple must be > 0; min_hold_s and warm_s >= 0")
        if not isinstance(self.share_limit, int) or not isinstance(self.claim_limit, int) \
                or not 1 <= self.share_limit <= self.claim_limit:
            raise FormatError("policy limits must satisfy 1 <= share_limit <= claimed_limit")
        if not isinstance(self.affinity, int) or self.affinity < 1:
            raise FormatError("policy.affinity must be an integer >= 1")
        return self

    @property
    def claim_limit(self) -> int:
        return self.share_limit if self.claimed_limit is None else self.claimed_limit


@dataclass
class ActionState:
    name: str
    inflight: int = 0
    claimed_by: str | None = None
    last_used: float = _NEVER
    recent: OrderedDict = field(default_factory=OrderedDict)  # model -> last time served


@dataclass
class ModelState:
    inflight: int = 0
    claim: str | None = None
    last_exec: float = 0.0
    last_done: float = _NEVER
    on: dict = field(default_factory=dict)  # action -> in flight there


class Pool:
    """Shared bookkeeping; subclasses decide placement."""

    queues = True  # wait when acquire() says None (the prototype fails instead)

    def __init__(self, actions: Iterable[str], params: PolicyParams | None = None) -> None:
        self.params = (params or PolicyParams()).validate()
        self.actions: dict[str, ActionState] = {a: ActionState(a) for a in actions}
        if not self.actions:
            raise FormatError("a pool needs at least one action")
        self.models: dict[str, ModelState] = {}

    def _model(self, model: str) -> ModelState:
        m = self.models.get(model)
        if m is None:
            m = self.models[model] = ModelState()
        return m

    def _take(self, a: ActionState, model: str, m: ModelState) -> str:
        a.inflight += 1
        m.inflight += 1
        m.on[a.name] = m.on.get(a.name, 0) + 1
        return a.name

    def release(self, model: str, action: str, now: float, exec_s: float | None) -> None:
        """`exec_s` is the activation's execution time, None when it failed."""
        a, m = self.actions[action], self._model(model)
        a.inflight -= 1
        m.inflight -= 1
        left = m.on.get(action, 0) - 1
        if left > 0:
            m.on[action] = left
        else:
            m.on.pop(action, None)
        a.last_used = now
        m.last_done = now
        if exec_s is not None:
            m.last_exec = exec_s
            a.recent[model] = now
            a.recent.move_to_end(model)
            while len(a.recent) > self.params.affinity:
                a.recent.popitem(last=False)

    def _hold(self, m: ModelState) -> float:
        return max(self.params.release_multiple * m.last_exec, self.params.min_hold_s)

    def _expire_claims(self, now: float) -> None:
        for a in self.actions.values():
            if a.claimed_by is None:
                continue
            m = self._model(a.claimed_by)
            if m.inflight == 0 and now - m.last_done > self._hold(m):
                a.claimed_by = None
                m.claim = None

    def next_change(self, now: float) -> float | None:
        """When a claim would lapse without any request finishing (waiters recheck then)."""
        times = []
        for a in self.actions.values():
            if a.claimed_by is not None:
                m = self._model(a.claimed_by)
                if m.inflight == 0:
                    times.append(m.last_done + self._hold(m))
        return min(times) if times else None

    def acquire(self, model: str, now: float, exclude: frozenset[str] = frozenset()) -> str | None:
        raise NotImplementedError

    def snapshot(self) -> dict:
        return {a.name: {"inflight": a.inflight, "claimed_by": a.claimed_by} for a in self.actions.values()}


class PackedPool(Pool):
    """Ours (module docstring)."""

    def _warm(self, a: ActionState, now: float) -> bool:
        return now - a.last_used < self.params.warm_s or a.inflight > 0

    def _rank(self, a: ActionState, model: str, now: float) -> tuple:
        # Most recently used first: load concentrates on few actions, so the
        # rest go cold and stop holding memory, and the warm ones stay warm.
        warm = self._warm(a, now)
        return (warm and model in a.recent, warm, a.last_used)

    def acquire(self, model: str, now: float, exclude: frozenset[str] = frozenset()) -> str | None:
        p = self.params
        self._expire_claims(now)
        m = self._model(model)
        if m.claim is not None and m.claim not in exclude and self.actions[m.claim].inflight < p.claim_limit:
            return self._take(self.actions[m.claim], model, m)
        shared = [a for a in self.actions.values() if a.claimed_by is None and a.inflight < p.share_limit]
        picked = _best([a for a in shared if a.name not in exclude] or shared, lambda a: self._rank(a, model, now))
        if picked is None and p.borrow:
            others = [a for a in self.actions.values()
                      if a.claimed_by not in (None, model) and a.inflight < p.share_limit]
            picked = _best([a for a in others if a.name not in exclude] or others,
                           lambda a: (self._warm(a, now) and model in a.recent, -a.inflight))
        if picked is None:
            return None
        name = self._take(picked, model, m)
        if picked.claimed_by is None and m.claim is None and m.on[name] >= p.claim_at:
            picked.claimed_by = model
            m.claim = name
        return name


class PrototypePool(Pool):
    """The SeSeMI prototype's FnPacker, as docs/architecture.md §9 describes it: a model's
    first request (or one while none of its own is in flight) takes the first
    action neither busy nor claimed by another model; its concurrent requests
    follow it there, and at `claim_at` in flight it claims the action; the claim
    lapses after idle > `release_multiple` x last execution time; with no such
    action the request fails ("All Busy")."""

    queues = False

    def acquire(self, model: str, now: float, exclude: frozenset[str] = frozenset()) -> str | None:
        self._expire_claims(now)
        m = self._model(model)
        if m.claim is not None:
            return self._take(self.actions[m.claim], model, m)
        if m.on:
            a = self.actions[next(iter(m.on))]
            name = self._take(a, model, m)
            if a.claimed_by is None and m.on[name] >= self.params.claim_at:
                a.claimed_by = model
                m.claim = name
            return name
        for a in self.actions.values():
            if a.inflight == 0 and a.claimed_by in (None, model) and a.name not in exclude:
                return self._take(a, model, m)
        return None


class PerModelPool(Pool):
    """Every model has its own action, named `prefix + model`."""

    def __init__(self, models: Iterable[str], prefix: str = "", params: PolicyParams | None = None) -> None:
        self.prefix = prefix
        super().__init__([prefix + mid for mid in models], params)

    def acquire(self, model: str, now: float, exclude: frozenset[str] = frozenset()) -> str | None:
        return self._take(self.actions[self.prefix + model], model, self._model(model))


def _best(items: list[ActionState], key: Callable[[ActionState], Any]) -> ActionState | None:
    return max(items, key=key) if items else None


POLICIES = {"sesemi": PackedPool, "prototype": PrototypePool}
