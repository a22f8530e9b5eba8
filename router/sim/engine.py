"""A discrete-event simulation of routing policies over an OpenWhisk-like
platform, replaying a workload (router/sim/workload.py).

Platform model (the parts that decide cold starts and cost):
- an action has containers; each runs up to `container_concurrency`
  activations at once; a request finding no free slot in a live container
  starts a new one, paying `cold_start_s` (later requests may join it while
  it starts, waiting for it: they count as cold too);
- a container idle for `keep_alive_s` is removed;
- a container keeps decrypted models in an LRU under a memory budget (and,
  for the prototype, a count of one); a model's footprint is its file size x
  `footprint_factor`; a request for a model it does not hold pays that
  model's load time (key fetch, decrypt, interpreter build) first;
- an action's memory limit is `base_mb` + its budget, rounded up to 128 MB;
  the budget is its one model's footprint (one action per model), or the
  largest footprint in the pack (prototype), or `cache_mb` (ours);
- cost: billed GB-s = activation durations (a cold start's initialisation
  included, as OpenWhisk's duration includes initTime) x the action's memory;
  reserved GB-s = container lifetimes (keep-alive included) x memory, what
  the provider holds.

The routing decisions are made by router/policy.py, the live router's code.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sesemi.packplan import action_names, check_plan

from ..policy import PackedPool, PerModelPool, PolicyParams, Pool, PrototypePool
from .workload import Workload

_DONE, _SEEN, _TICK, _TIMEOUT = 0, 1, 2, 3
_QUEUED, _RUNNING, _FINISHED, _FAILED = 1, 2, 3, 4


@dataclass(frozen=True)
class PlatformParams:
    cold_start_s: float = 0.18     # container process start + /init with attestation (measured here, sim TEE)
    keep_alive_s: float = 600.0    # OpenWhisk's default idle container lifetime
    container_concurrency: int = 4
    overhead_s: float = 0.003      # router hop + controller, per request (assumption)
    exec_cv: float = 0.1           # spread of one model's execution time (assumption)
    base_mb: float = 128.0         # runtime without models (measured RSS ~70 MB, rounded up)
    footprint_factor: float = 3.7  # resident MB per MB of model file (measured: MobileNetV2, +52 MB for 13.9 MB)


@dataclass(frozen=True)
class Setup:
    label: str
    kind: str                      # "per-model" | "prototype" | "sesemi" | "plan"
    cache_models: int | None = None  # decrypted models one container keeps at most (None: budget only)
    cache_mb: float | None = None    # the budget (None: the largest model of the action fits)
    pool_size: int = 5
    models_per_pack: int = 10
    queue_timeout_s: float = 30.0
    poll: bool = False             # non-blocking invoke + result polling (the prototype)
    poll_first_s: float = 0.002
    poll_cap_s: float = 1.0
    poll_tries: int = 60
    params: PolicyParams = field(default_factory=PolicyParams)
    plan: dict | None = None       # kind "plan": a pack plan (sesemi/packplan.py), each pack as written


@dataclass
class Result:
    label: str
    requests: int
    served: int
    failed_all_busy: int
    failed_timeout: int
    cold_requests: int
    container_starts: int
    model_loads: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    billed_gbs: float
    reserved_gbs: float
    mean_containers: float
    latencies_s: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def failed(self) -> int:
        return self.failed_all_busy + self.failed_timeout

    @property
    def cold_rate(self) -> float:
        return self.cold_requests / self.served if self.served else 0.0

    @property
    def load_rate(self) -> float:
        return self.model_loads / self.served if self.served else 0.0

    def row(self) -> dict:
        return {"policy": self.label, "requests": self.requests, "served": self.served, "failed": self.failed,
                "failed_all_busy": self.failed_all_busy, "failed_timeout": self.failed_timeout,
                "cold_start_rate": self.cold_rate, "container_starts": self.container_starts,
                "model_load_rate": self.load_rate, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "mean_ms": self.mean_ms, "billed_gb_s": self.billed_gbs, "reserved_gb_s": self.reserved_gbs,
                "mean_containers": self.mean_containers}


class _Container:
    __slots__ = ("busy", "ready_at", "idle_since", "created", "models", "used_mb", "mem_gb")

    def __init__(self, t: float, ready_at: float, mem_gb: float) -> None:
        self.busy = 0
        self.ready_at = ready_at
        self.idle_since = t
        self.created = t
        self.models: OrderedDict[str, float] = OrderedDict()
        self.used_mb = 0.0
        self.mem_gb = mem_gb


class Simulation:
    def __init__(self, workload: Workload, setup: Setup, platform: PlatformParams, seed: int = 1) -> None:
        self.w, self.s, self.p = workload, setup, platform
        self.rng = np.random.default_rng(seed)
        ids = [m.model_id for m in workload.models]
        self.pools: list[Pool] = []
        self.pool_of: list[int] = []
        self.footprint = {m.model_id: m.cost.size_mb * platform.footprint_factor for m in workload.models}
        self.budget: dict[str, float] = {}
        mem_mb: dict[str, float] = {}
        if setup.kind == "per-model":
            self.pools.append(PerModelPool(ids, "fn-", setup.params))
            self.pool_of = [0] * len(ids)
            self.budget = {f"fn-{mid}": self.footprint[mid] for mid in ids}
        elif setup.kind == "plan":
            self._plan_pools(setup.plan or {}, ids, mem_mb)
        else:
            cls = {"prototype": PrototypePool, "sesemi": PackedPool}[setup.kind]
            for k in range(math.ceil(len(ids) / setup.models_per_pack)):
                members = ids[k * setup.models_per_pack:(k + 1) * setup.models_per_pack]
                budget = setup.cache_mb if setup.cache_mb is not None else max(self.footprint[m] for m in members)
                names = [f"pack{k}-{j}" for j in range(1, setup.pool_size + 1)]
                self.budget.update({a: budget for a in names})
                self.pools.append(cls(names, setup.params))
            self.pool_of = [i // setup.models_per_pack for i in range(len(ids))]
        self.mem_gb = {a: (mem_mb[a] if a in mem_mb else
                           max(128.0, math.ceil((platform.base_mb + b) / 128) * 128)) / 1024
                       for a, b in self.budget.items()}
        self.containers: dict[str, list[_Container]] = {}
        self.reserved_gbs = 0.0
        self.container_s = 0.0
        self.billed_gbs = 0.0
        self.container_starts = 0
        self.model_loads = 0
        self.cold_requests = 0
        polls, acc, d = [], 0.0, setup.poll_first_s
        for _ in range(setup.poll_tries):
            acc += d
            polls.append(acc)
            d = min(d * 2, setup.poll_cap_s)
        self.poll_times = polls

    def _plan_pools(self, plan: dict, ids: list[str], mem_mb: dict[str, float]) -> None:
        """A plan's packs as written: each its own memory limit, LRU budget, pool and policy."""
        base = {k: v for k, v in ((plan.get("router") or {}).get("policy") or {}).items() if k != "kind"}
        where = {}
        for k, pack in enumerate(check_plan(plan)["packs"]):
            names = action_names(pack)
            for a in names:
                self.budget[a] = float(pack["budget_mb"])
                mem_mb[a] = float(pack["memory_mb"])
            self.pools.append(PackedPool(names, replace(self.s.params, **{**base, **pack.get("policy", {})})))
            where.update({m: k for m in pack["models"]})
        missing = [m for m in ids if m not in where]
        if missing:
            raise ValueError(f"the plan does not place model(s) {missing[:5]}")
        self.pool_of = [where[m] for m in ids]

    # -- platform --------------------------------------------------------------------------------

    def _place(self, action: str, model: int, t: float) -> tuple[_Container, float, float]:
        """Pick or start a container; returns it, when the model starts
        executing (after any cold start and model load), and the finish time."""
        p, ka = self.p, self.p.keep_alive_s
        cs = self.containers.get(action)
        if cs is None:
            cs = self.containers[action] = []
        elif any(c.busy == 0 and t >= c.idle_since + ka for c in cs):
            alive = []
            for c in cs:
                if c.busy == 0 and t >= c.idle_since + ka:
                    self.reserved_gbs += (c.idle_since + ka - c.created) * c.mem_gb
                    self.container_s += c.idle_since + ka - c.created
                else:
                    alive.append(c)
            cs[:] = alive
        mid = self.w.models[model].model_id
        best, best_key = None, (False, False, 0.0)
        for c in cs:
            if c.busy < p.container_concurrency:
                key = (mid in c.models, c.ready_at <= t, c.idle_since)
                if best is None or key > best_key:
                    best, best_key = c, key
        started = False
        if best is None:
            best = _Container(t, t + p.cold_start_s, self.mem_gb[action])
            cs.append(best)
            self.container_starts += 1
            started = True
        c = best
        c.busy += 1
        begin = max(t, c.ready_at)
        if begin > t:
            self.cold_requests += 1
        cost = self.w.models[model].cost
        ready = c.models.get(mid)
        if ready is None:
            self.model_loads += 1
            ready = begin + cost.load_s
            c.models[mid] = ready
            c.used_mb += self.footprint[mid]
            budget, cap = self.budget[action], self.s.cache_models or len(c.models)
            while len(c.models) > 1 and (len(c.models) > cap or c.used_mb > budget + 1e-9):
                old, _ = c.models.popitem(last=False)
                c.used_mb -= self.footprint[old]
        else:
            c.models.move_to_end(mid)
        run_at = max(begin, ready)
        sigma2 = math.log1p(p.exec_cv ** 2)
        exec_s = cost.exec_s * float(self.rng.lognormal(-sigma2 / 2, math.sqrt(sigma2)))
        finish = run_at + exec_s
        self.billed_gbs += (finish - (c.created if started else begin)) * c.mem_gb
        return c, begin, finish

    # -- events ----------------------------------------------------------------------------------

    def run(self) -> Result:
        w, s = self.w, self.s
        n = w.n
        times, midx = w.times, w.model_idx
        ids = [m.model_id for m in w.models]
        state = np.zeros(n, dtype=np.int8)
        dispatched = np.zeros(n)
        latency = np.full(n, np.nan)
        all_busy = timeouts = 0
        heap: list = []
        seq = 0
        queues: list[deque[Any]] = [deque() for _ in self.pools]
        qcount = [0] * len(self.pools)
        tick_at = [math.inf] * len(self.pools)

        def push(t: float, kind: int, data: tuple) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, kind, seq, data))

        def dispatch(i: int, action: str, t: float) -> None:
            c, begin, finish = self._place(action, int(midx[i]), t)
            state[i] = _RUNNING
            dispatched[i] = t
            push(finish, _DONE, (i, action, c, begin))

        def schedule_tick(k: int, t: float) -> None:
            nxt = self.pools[k].next_change(t)
            if nxt is not None and t < nxt < tick_at[k]:
                tick_at[k] = nxt
                push(nxt + 1e-9, _TICK, (k,))

        def drain(k: int, t: float) -> None:
            q = queues[k]
            if not qcount[k]:
                q.clear()
                return
            pool, keep = self.pools[k], deque[Any]()
            for i in q:
                if state[i] != _QUEUED:
                    continue
                action = pool.acquire(ids[midx[i]], t)
                if action is None:
                    keep.append(i)
                else:
                    qcount[k] -= 1
                    dispatch(i, action, t)
            queues[k] = keep
            if keep:
                schedule_tick(k, t)

        def arrive(i: int, t: float) -> None:
            nonlocal all_busy
            k = self.pool_of[midx[i]]
            pool = self.pools[k]
            action = None if qcount[k] else pool.acquire(ids[midx[i]], t)
            if action is not None:
                dispatch(i, action, t)
            elif pool.queues:
                state[i] = _QUEUED
                queues[k].append(i)
                qcount[k] += 1
                push(t + s.queue_timeout_s, _TIMEOUT, (i, k))
                schedule_tick(k, t)
            else:
                state[i] = _FAILED
                all_busy += 1

        a = 0
        while a < n or heap:
            if a < n and (not heap or times[a] < heap[0][0]):
                arrive(a, float(times[a]))
                a += 1
                continue
            t, kind, _, data = heapq.heappop(heap)
            if kind == _DONE:
                i, action, c, begin = data
                c.busy -= 1
                if c.busy == 0:
                    c.idle_since = t
                if s.poll:
                    # The prototype's router learns of the result at its next poll:
                    # until then the action counts as busy, and the time it measured
                    # (to the poll) is the "last execution time" its claims use.
                    j = bisect.bisect_left(self.poll_times, t - dispatched[i])
                    seen = dispatched[i] + self.poll_times[min(j, len(self.poll_times) - 1)]
                    push(seen, _SEEN, (i, action, j < len(self.poll_times)))
                    continue
                k = self.pool_of[midx[i]]
                self.pools[k].release(ids[midx[i]], action, t, t - begin)
                state[i] = _FINISHED
                latency[i] = t - times[i] + self.p.overhead_s
                drain(k, t)
            elif kind == _SEEN:
                i, action, ok = data
                k = self.pool_of[midx[i]]
                self.pools[k].release(ids[midx[i]], action, t, t - dispatched[i])
                if ok:
                    state[i] = _FINISHED
                    latency[i] = t - times[i] + self.p.overhead_s
                else:
                    state[i] = _FAILED
                    timeouts += 1
                drain(k, t)
            elif kind == _TICK:
                (k,) = data
                if tick_at[k] <= t:
                    tick_at[k] = math.inf
                drain(k, t)
            else:
                i, k = data
                if state[i] == _QUEUED:
                    state[i] = _FAILED
                    qcount[k] -= 1
                    timeouts += 1

        end = max(w.params.duration_s, float(times[-1]) if n else 0.0)
        for cs in self.containers.values():
            for c in cs:
                life_end = end if c.busy else min(end, c.idle_since + self.p.keep_alive_s)
                self.reserved_gbs += max(0.0, life_end - c.created) * c.mem_gb
                self.container_s += max(0.0, life_end - c.created)
        ok = latency[~np.isnan(latency)]
        pct = (lambda q: float(np.percentile(ok, q)) * 1e3) if len(ok) else (lambda q: 0.0)
        return Result(s.label, n, len(ok), all_busy, timeouts, self.cold_requests, self.container_starts,
                      self.model_loads, pct(50), pct(99), float(ok.mean() * 1e3) if len(ok) else 0.0,
                      self.billed_gbs, self.reserved_gbs, self.container_s / end, ok)
