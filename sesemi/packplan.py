"""The pack planner: which models share a pack, each pack's memory limit and
LRU budget, its pool and router policy, and which models stay alone, chosen
to minimise billed GB-s under targets for the cold-start rate, the p99 and
the reserved memory (docs/packing.md, "The pack planner").

The cost model is the simulator's (router/sim/engine.py) and OpenWhisk's:
an activation is billed its `duration` (initTime included on a cold start)
x the action's memory limit. The planner estimates, per model and per
candidate pack, from a trace (or per-model rates):

- alone: every request at the model's own smallest memory limit, replayed
  through the containers the platform would run for it: a request finding no
  free slot starts one (initialisation and model load billed; requests that
  join it while it starts are cold too), an idle one goes after the
  keep-alive; or with its scale-out bounded by the router (1, 2 or 4
  containers; beyond them a request waits for a slot, unbilled);
- packed: every request at the pack's memory limit; a request whose model
  is not in the LRU (replayed over the pack's merged trace) adds the model
  load; the pack's pool is replayed as the router uses it (the most recently
  used live action with a free slot, else a cold one).

It searches, per memory class (models whose own limit is the same), how
many of the class's rarest models to pack and at which memory limit, and
keeps the cheapest combination that meets the targets. The plan is JSON
(`PLAN_FORMAT`) that `sesemi pack build --plan`, `sesemi deploy --plan` and
the router (`router serve --config plan.json`) read as written.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import FormatError
from .names import check_model_id

PLAN_FORMAT = "sesemi-pack-plan/1"
SCALE_OUT_LIMIT = 1000        # an alone model whose bursts start containers: the router does not hold them
# How an alone model's burst is served: the containers the router lets the platform run for it
# (claimed_limit = that x the concurrency); beyond them requests wait for a slot. None: unbounded.
BURSTS: dict[str, int | None] = {"scale": None, "cap4": 4, "cap2": 2, "queue": 1}
MAX_TRACE_ROWS = 5_000_000    # requests the planner replays (~0.5 GB); beyond it the input is refused, not half-read


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    size_mb: float       # sealed file
    footprint_mb: float  # resident once decrypted and loaded (measured, or size x 3.7)
    load_s: float        # first request in a warm container: key, decrypt, interpreter
    exec_s: float        # warm request
    sealed: str | None = None


@dataclass(frozen=True)
class PlatformSpec:
    keep_alive_s: float = 600.0   # OpenWhisk's default idle container lifetime
    cold_start_s: float = 0.255   # container start + /init (bench/bench_platform.py)
    concurrency: int = 4          # the actions' limits.concurrency
    base_mb: float = 128.0        # the runtime without models
    memory_step_mb: int = 128     # memory limits are chosen in these steps
    max_memory_mb: int = 512      # the platform's largest limits.memory (stock OpenWhisk: 512)


@dataclass(frozen=True)
class Targets:
    cold_start_rate: float = 0.0005   # cold requests / requests
    p99_ratio: float = 1.1            # p99 / one action per model's
    reserved_ratio: float = 0.5       # container memory-time / one action per model's
    billed_ratio: float = 1.0         # billed GB-s / one action per model's: kept first when not all can be met


@dataclass
class _Option:
    """One memory class's choice: its `k` rarest models packed at `memory_mb`."""
    cls: int
    k: int
    memory_mb: int
    billed: float
    cold: float
    reserved: float
    lat: np.ndarray                       # latency histogram (requests per bin of _EDGES)
    loads: dict[str, float] = field(default_factory=dict)
    peak: int = 0


def memory_limit(base_mb: float, budget_mb: float, step: int) -> int:
    return int(max(step, math.ceil((base_mb + budget_mb) / step) * step))


# -- inputs ---------------------------------------------------------------------------------------------

def _num(d: Mapping[str, Any], key: str, what: str, default: float | None = None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise FormatError(f"{what}: {key} must be a number >= 0")
    return float(v)


def parse_models(doc: Any, base_dir: Path | None = None, factor: float = 3.7) -> list[ModelSpec]:
    """A manifest: {"models": [{"model_id", "size_mb" (or "sealed"), "footprint_mb"
    (default size x `factor`), "load_s", "exec_s", "sealed"}]}."""
    items = doc.get("models") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise FormatError("models manifest: 'models' must list at least one model")
    out, seen = [], set()
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise FormatError(f"models[{i}] must be an object")
        mid = check_model_id(m.get("model_id"))
        if mid in seen:
            raise FormatError(f"models manifest: {mid} listed twice")
        seen.add(mid)
        sealed = m.get("sealed")
        if sealed is not None and not isinstance(sealed, str):
            raise FormatError(f"model {mid}: sealed must be a file path")
        if sealed and base_dir is not None and not Path(sealed).is_absolute():
            sealed = str(base_dir / sealed)
        if "size_mb" in m:
            size = _num(m, "size_mb", f"model {mid}")
        elif sealed:
            try:
                size = Path(sealed).stat().st_size / (1 << 20)
            except OSError as exc:
                raise FormatError(f"model {mid}: cannot read {sealed}: {exc.strerror or exc}") from None
        else:
            raise FormatError(f"model {mid}: give size_mb or a sealed file")
        fp = _num(m, "footprint_mb", f"model {mid}", size * factor)
        spec = ModelSpec(mid, size, fp, _num(m, "load_s", f"model {mid}"), _num(m, "exec_s", f"model {mid}"), sealed)
        if spec.exec_s <= 0:
            raise FormatError(f"model {mid}: exec_s must be > 0")
        out.append(spec)
    return out


def read_trace(path: Path, models: Iterable[str]) -> tuple[dict[str, list[float]], float]:
    """A CSV of `timestamp,model` (seconds; a header row is allowed): each
    model's sorted arrival times, and the trace's span (s)."""
    known = set(models)
    times: dict[str, list[float]] = {m: [] for m in known}
    lo, hi, rows = math.inf, -math.inf, 0
    try:
        with open(path, newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or (n == 1 and row[0].strip().lower() in ("timestamp", "time", "t")):
                    continue
                rows += 1
                if rows > MAX_TRACE_ROWS:
                    raise FormatError(f"trace {path}: more than {MAX_TRACE_ROWS:,} rows")
                if len(row) < 2:
                    raise FormatError(f"trace {path} line {n}: expected timestamp,model")
                try:
                    t = float(row[0])
                except ValueError:
                    raise FormatError(f"trace {path} line {n}: timestamp is not a number") from None
                if not math.isfinite(t):
                    raise FormatError(f"trace {path} line {n}: timestamp is not finite")
                mid = row[1].strip()
                if mid not in known:
                    raise FormatError(f"trace {path} line {n}: model {mid[:64]!r} is not in the models manifest")
                times[mid].append(t)
                lo, hi = min(lo, t), max(hi, t)
    except OSError as exc:
        raise FormatError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error):
        raise FormatError(f"trace {path}: not a CSV text file") from None
    if rows == 0:
        raise FormatError(f"trace {path}: no requests")
    for v in times.values():
        v.sort()
    return times, max(hi - lo, 1.0)


def times_from_rates(rates: Mapping[str, float], span_s: float = 86400.0) -> dict[str, list[float]]:
    """Per-model rates (requests/s) as evenly spread arrivals over `span_s`:
    the planner's estimate for a rate without a trace (no burst is known)."""
    out = {}
    for mid, r in rates.items():
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise FormatError(f"rate of {mid} must be a number >= 0 (requests/s)")
    total = sum(rates.values()) * span_s
    if total > MAX_TRACE_ROWS:
        raise FormatError(f"the rates make {total:,.0f} requests a day, more than the planner replays "
                          f"({MAX_TRACE_ROWS:,}): give a trace sample instead")
    for mid, r in rates.items():
        n = int(round(r * span_s))
        out[mid] = [(i + 0.5) * span_s / n for i in range(n)] if n else []
    return out


# -- estimates ------------------------------------------------------------------------------------------

_EDGES = np.concatenate([[0.0], np.geomspace(1e-4, 600.0, 800)])  # latency histogram bins (s)


def _hist(pairs: Iterable[tuple[float, float]]) -> np.ndarray:
    """(latency s, requests) pairs as a histogram: p99s of sums are cheap."""
    items = list(pairs)
    h = np.zeros(len(_EDGES))
    if items:
        x, w = np.array(items, dtype=float).T
        np.add.at(h, np.searchsorted(_EDGES, x, side="left"), w)
    return h


def _p99(h: np.ndarray, q: float = 0.99) -> float:
    total = h.sum()
    if total <= 0:
        return 0.0
    i = int(np.searchsorted(np.cumsum(h), q * total))
    return float(_EDGES[min(i, len(_EDGES) - 1)])


def _scale_out(ts: Sequence[float], m: ModelSpec, p: PlatformSpec,
               cap: int | None = None) -> tuple[int, float, float, dict[float, int]]:
    """One action per model as the platform runs it: a request finding no free
    slot starts a container (cold, as are those joining it while it starts); a
    container idle for the keep-alive goes. With `cap`, the router lets at most
    `cap` x concurrency in flight (the platform then runs at most `cap`
    containers) and the rest wait for a slot. Cold starts, billed seconds (a
    starter's duration includes initTime; a joiner's starts when the container
    is ready; a wait at the router is not billed), container-alive seconds,
    and {latency: requests}."""
    conts: list[list[Any]] = []  # [ready_at, last_end, [finish times in flight], created]
    cold, billed, alive = 0, 0.0, 0.0
    lat: dict[float, int] = {}
    for t in ts:
        keep = []
        for c in conts:
            c[2] = [f for f in c[2] if f > t]
            if not c[2] and t >= c[1] + p.keep_alive_s:
                alive += c[1] + p.keep_alive_s - c[3]
            else:
                keep.append(c)
        conts = keep
        free = [c for c in conts if len(c[2]) < p.concurrency]
        if free:
            c = max(free, key=lambda c: (c[0] <= t, c[1]))
            if c[0] <= t:
                took = bill = m.exec_s
            else:  # joins a starting container: waits for it and its model load
                took, bill = c[0] - t + m.load_s + m.exec_s, m.load_s + m.exec_s
        elif cap is not None and len(conts) >= cap:  # held at the router until a slot frees
            c = min(conts, key=lambda c: min(c[2]))
            at = min(c[2])
            c[2].remove(at)
            took, bill = max(at, c[0]) - t + m.exec_s, m.exec_s
        else:
            c = [t + p.cold_start_s, t, [], t]
            conts.append(c)
            took = bill = p.cold_start_s + m.load_s + m.exec_s
        cold += bill > m.exec_s
        billed += bill
        c[2].append(t + took)
        c[1] = max(c[1], t + took)
        lat[round(took, 4)] = lat.get(round(took, 4), 0) + 1
    for c in conts:
        alive += c[1] + p.keep_alive_s - c[3]
    return cold, billed, alive, lat


def _pool_starts(ts: Sequence[float], service: Sequence[float], first: Sequence[float], pool: int,
                 p: PlatformSpec) -> tuple[int, int, float, float]:
    """A pool of `pool` actions behind the router (no router-made scale-out):
    a request takes the most recently used live action with a free slot, else
    starts one of the idle ones (a cold start; requests that join it while it
    starts are cold too), else waits for the first slot to free. `first[i]` is
    what request i adds when it starts a container (its model load). Cold
    requests, container starts, billed seconds of the starts' initialisation,
    and container-alive seconds."""
    acts: list[list[Any]] = [[-math.inf, [], -math.inf, 0.0] for _ in range(pool)]  # [last end, finishes, ready at, born]
    cold = starts = 0
    alive = 0.0
    for t, svc, extra in zip(ts, service, first):
        for a in acts:
            if a[1]:
                a[1] = [f for f in a[1] if f > t]
        live = [a for a in acts if len(a[1]) < p.concurrency and (a[1] or t - a[0] < p.keep_alive_s)]
        if live:
            a = max(live, key=lambda a: a[0])
            begin = max(t, a[2])
            cold += begin > t
        else:
            idle = [a for a in acts if not a[1]]
            if idle:
                a = idle[0]
                if a[0] > -math.inf:
                    alive += a[0] + p.keep_alive_s - a[3]
                a[2], a[3] = t + p.cold_start_s, t
                begin = a[2] + extra
                cold += 1
                starts += 1
            else:  # every slot busy: wait for the first to free
                a = min(acts, key=lambda a: min(a[1]))
                begin = min(a[1])
        fin = begin + svc
        a[1].append(fin)
        a[0] = max(a[0], fin)
    alive += sum(a[0] + p.keep_alive_s - a[3] for a in acts if a[0] > -math.inf)
    return cold, starts, starts * p.cold_start_s, alive


def _peak(ts: Sequence[float], service: Sequence[float]) -> int:
    events = sorted([(t, 1) for t in ts] + [(t + s, -1) for t, s in zip(ts, service)])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _lru_loads(merged: Sequence[tuple[float, str]], fp: Mapping[str, float], budget: float,
               flags: list[bool] | None = None) -> dict[str, int]:
    cache: OrderedDict[str, float] = OrderedDict()
    used = 0.0
    loads: dict[str, int] = {}
    for _, mid in merged:
        if mid in cache:
            cache.move_to_end(mid)
            if flags is not None:
                flags.append(False)
            continue
        if flags is not None:
            flags.append(True)
        loads[mid] = loads.get(mid, 0) + 1
        cache[mid] = fp[mid]
        used += fp[mid]
        while len(cache) > 1 and used > budget + 1e-9:
            _, f = cache.popitem(last=False)
            used -= f
    return loads


@dataclass
class _Alone:
    """A model alone, per way of serving its bursts (`BURSTS`): `scale` lets
    the platform start containers (one action per model); the others bound
    them at the router, the rest of a burst waiting for a slot (fewer cold
    starts, a wait)."""
    requests: int
    mb: int
    billed: dict[str, float]
    cold: dict[str, float]
    reserved: dict[str, float]
    hist: dict[str, np.ndarray]


class Planner:
    def __init__(self, models: Sequence[ModelSpec], times: Mapping[str, Sequence[float]], span_s: float,
                 platform: PlatformSpec = PlatformSpec(), targets: Targets = Targets(),
                 progress: Callable[[str], None] | None = None) -> None:
        self.models = {m.model_id: m for m in models}
        self.times = {m: sorted(float(t) for t in times.get(m, ())) for m in self.models}
        self.span_s, self.p, self.t = span_s, platform, targets
        self.progress = progress or (lambda _msg: None)
        self.alone_mb = {m.model_id: memory_limit(platform.base_mb, m.footprint_mb, platform.memory_step_mb)
                         for m in models}
        too_big = [m for m, mb in self.alone_mb.items() if mb > platform.max_memory_mb]
        if too_big:
            raise FormatError(f"model(s) {', '.join(sorted(too_big))} need more than the platform's "
                              f"{platform.max_memory_mb} MB alone (--max-memory)")
        self.n = sum(len(v) for v in self.times.values())
        if not self.n:
            raise FormatError("no requests for any model of the manifest")
        self.progress(f"{len(self.models)} models, {self.n:,} requests: one action per model, estimated")
        self.alone = {m: self._alone(m) for m in self.models}
        self.classes = sorted(set(self.alone_mb.values()))
        # Rarest first: packing saves a rare model's cold starts and costs a busy one reloads.
        self.members = {c: sorted((m for m in self.models if self.alone_mb[m] == c),
                                  key=lambda m: (len(self.times[m]), m)) for c in self.classes}

    def _alone(self, mid: str) -> _Alone:
        m, ts, mb = self.models[mid], self.times[mid], self.alone_mb[mid]
        gb = mb / 1024
        out = _Alone(len(ts), mb, {}, {}, {}, {})
        for how, cap in BURSTS.items():
            cold, billed, alive, lat = _scale_out(ts, m, self.p, cap)
            out.billed[how], out.cold[how], out.reserved[how] = billed * gb, cold, alive * gb
            out.hist[how] = _hist(lat.items())
        return out

    def _option(self, c: int, k: int, memory_mb: int) -> _Option:
        packed, rest = self.members[c][:k], self.members[c][k:]
        billed = sum(self.alone[m].billed["scale"] for m in rest)
        cold = sum(self.alone[m].cold["scale"] for m in rest)
        reserved = sum(self.alone[m].reserved["scale"] for m in rest)
        hist = sum((self.alone[m].hist["scale"] for m in rest), np.zeros(len(_EDGES)))
        opt = _Option(c, k, memory_mb, billed, cold, reserved, hist)
        if not packed:
            return opt
        merged = sorted((t, m) for m in packed for t in self.times[m])
        fp = {m: self.models[m].footprint_mb for m in packed}
        flags: list[bool] = []
        loads = _lru_loads(merged, fp, memory_mb - self.p.base_mb, flags)
        ts = [t for t, _ in merged]
        spec = self.models
        service = [spec[m].exec_s + (spec[m].load_s if ld else 0.0) for (_, m), ld in zip(merged, flags)]
        peak = _peak(ts, service)
        pcold, _, init_s, alive = _pool_starts(ts, service, [0.0] * len(ts), self._pool(peak), self.p)
        gb = memory_mb / 1024
        work = sum(service)
        opt.billed += (work + init_s) * gb
        opt.cold += pcold
        opt.reserved += alive * gb
        lat = []
        for m in packed:
            ms, n, ld = self.models[m], len(self.times[m]), loads.get(m, 0)
            lat += [(ms.exec_s, n - ld), (ms.load_s + ms.exec_s, ld)]
        lat.append((self.p.cold_start_s + max(self.models[m].load_s + self.models[m].exec_s for m in packed), pcold))
        opt.lat = opt.lat + _hist(lat)
        opt.loads = {m: float(loads.get(m, 0)) for m in packed}
        opt.peak = peak
        return opt

    def _pool(self, peak: int) -> int:
        return max(2, math.ceil(peak / self.p.concurrency) + 1)

    def _candidates(self, c: int) -> list[_Option]:
        n = len(self.members[c])
        ks = sorted(set(range(min(n, 40) + 1)) | set(range(40, n + 1, 4)) | {n})
        mems = range(c, self.p.max_memory_mb + 1, self.p.memory_step_mb)
        opts = [self._option(c, k, mb) for k in ks for mb in (mems if k else [c])]
        self.progress(f"class {c} MB: {n} models, {len(opts)} pack options estimated")
        # Keep the options no other beats on billed, cold starts and reserved memory at once.
        opts.sort(key=lambda o: (o.billed, o.cold, o.reserved))
        front: list[_Option] = []
        for o in opts:
            if not any(f.cold <= o.cold and f.reserved <= o.reserved for f in front):
                front.append(o)
        return front

    def _hold_bursts(self, cb: Sequence[Any], limits: Mapping[str, float]) -> tuple[float, float, float, np.ndarray, dict[str, str]]:
        """Given packs, bound the scale-out of alone models (most cold starts
        saved first; of a model's bounds the tightest that keeps the p99
        within its target) while the cold-start target is missed."""
        billed = sum(o.billed for o in cb)
        cold = sum(o.cold for o in cb)
        reserved = sum(o.reserved for o in cb)
        hist = sum((o.lat for o in cb), np.zeros(len(_EDGES)))
        alone = [m for o in cb for m in self.members[o.cls][o.k:]]
        order = sorted(alone, key=lambda m: self.alone[m].cold["queue"] - self.alone[m].cold["scale"])
        held: dict[str, str] = {}
        for m in order:
            if cold <= limits["cold"]:
                break
            a = self.alone[m]
            for how in ("queue", "cap2", "cap4"):
                if a.cold[how] >= a.cold["scale"] or a.billed[how] > a.billed["scale"] + 1e-12:
                    continue
                h2 = hist - a.hist["scale"] + a.hist[how]
                if _p99(h2) > limits["p99"]:
                    continue
                hist, held[m] = h2, how
                billed += a.billed[how] - a.billed["scale"]
                cold += a.cold[how] - a.cold["scale"]
                reserved += a.reserved[how] - a.reserved["scale"]
                break
        return billed, cold, reserved, hist, held

    def plan(self, targets: Targets | None = None) -> dict[str, Any]:
        """The cheapest plan that meets `targets` (default: the planner's); the
        per-class options are estimated once and reused for other targets."""
        if targets is not None:
            self.t = targets
        base = {k: sum(getattr(a, k)["scale"] for a in self.alone.values()) for k in ("billed", "cold", "reserved")}
        base_p99 = _p99(sum((a.hist["scale"] for a in self.alone.values()), np.zeros(len(_EDGES))))
        limits = {"cold": self.t.cold_start_rate * self.n, "reserved": self.t.reserved_ratio * base["reserved"],
                  "p99": self.t.p99_ratio * base_p99}
        if not hasattr(self, "_fronts"):
            self._fronts = [self._candidates(c) for c in self.classes]
        fronts = list(self._fronts)
        while math.prod(len(f) for f in fronts) > 200_000:  # thin the largest front: the search stays bounded
            i = max(range(len(fronts)), key=lambda j: len(fronts[j]))
            fronts[i] = fronts[i][::2]
        combos = sorted(itertools.product(*fronts), key=lambda cb: sum(o.billed for o in cb))
        self.progress(f"searching {len(combos):,} combinations")
        best: Any = None
        best_key: Any = None
        for n_tried, cb in enumerate(combos):
            if n_tried >= 3000 and best is not None:
                break
            billed, cold, reserved, hist, held = self._hold_bursts(cb, limits)
            p99 = _p99(hist)
            miss = [max(0.0, cold / limits["cold"] - 1) if limits["cold"] else float(cold > 0),
                    max(0.0, reserved / limits["reserved"] - 1) if limits["reserved"] else float(reserved > 0),
                    max(0.0, p99 / limits["p99"] - 1)]
            over = max(0.0, billed / (self.t.billed_ratio * base["billed"]) - 1)
            key = (over > 1e-9, sum(1 for x in miss if x > 1e-9), sum(miss), billed)
            if best is None or key < best_key:
                best, best_key = (cb, billed, cold, reserved, p99, held), key
            if key[:2] == (False, 0):
                break  # combos are in order of billed before holding bursts, which only lowers it
        cb, billed, cold, reserved, p99, held = best
        return self._document(cb, held, base, base_p99, limits, billed, cold, reserved, p99)

    def _document(self, cb: Sequence[Any], held: Mapping[str, str], base: Mapping[str, float], base_p99: float,
                  limits: Mapping[str, float], billed: float, cold: float, reserved: float,
                  p99: float) -> dict[str, Any]:
        p, packs, alone = self.p, [], []
        rate = {m: len(self.times[m]) / self.span_s for m in self.models}
        for o in cb:
            mem = self.members[o.cls]
            packed = mem[:o.k]
            if packed:
                name = f"pack{o.cls}"
                pool = self._pool(o.peak)
                ceiling = max(rate[m] for m in packed)
                packs.append({
                    "name": name, "models": list(packed), "memory_mb": o.memory_mb,
                    "budget_mb": int(o.memory_mb - p.base_mb), "pool_size": pool, "policy": {},
                    "estimate": {"requests": sum(len(self.times[m]) for m in packed),
                                 "model_loads": int(sum(o.loads.values())), "peak_in_flight": o.peak},
                    "reason": (f"the {len(packed)} rarest of the {len(mem)} models needing {o.cls} MB alone "
                               f"(up to {ceiling * 3600:.3g} requests/h each) share {pool} actions of "
                               f"{o.memory_mb} MB: a request finds a warm container instead of a cold start; "
                               f"a {o.memory_mb - p.base_mb:g} MB LRU budget was the cheapest in billed GB-s "
                               f"of {o.cls}..{p.max_memory_mb} MB")})
            for m in mem[o.k:]:
                a, how = self.alone[m], held.get(m, "scale")
                cap = BURSTS[how]
                policy = {} if cap == 1 else {"claimed_limit": (cap or SCALE_OUT_LIMIT) * p.concurrency}
                why = ("a burst starts containers as with one action per model (bounding it would cost the "
                       "p99 more than its cold starts are worth to the targets)" if cap is None else
                       f"a burst beyond {cap} container(s) waits at the router for a free slot, which saves "
                       f"{a.cold['scale'] - a.cold[how]:g} scale-out cold starts in the trace")
                alone.append({
                    "name": f"solo-{m}", "models": [m], "memory_mb": a.mb,
                    "budget_mb": int(a.mb - p.base_mb), "pool_size": 1, "policy": policy, "bursts": how,
                    "estimate": {"requests": a.requests, "cold_starts": a.cold[how]},
                    "reason": (f"{rate[m] * 3600:.3g} requests/h: alone at its own {a.mb} MB it keeps a warm "
                               f"container with its model loaded, where the {o.cls} MB pack would add reloads "
                               f"or memory; {why}")})
        unmet = []
        if billed > self.t.billed_ratio * base["billed"] + 1e-9:
            unmet.append(f"billed {billed / base['billed']:.3f}x > {self.t.billed_ratio:g}x")
        if cold > limits["cold"] + 1e-9:
            unmet.append(f"cold-start rate {cold / self.n:.4%} > {self.t.cold_start_rate:.4%}")
        if reserved > limits["reserved"] + 1e-9:
            unmet.append(f"reserved {reserved / base['reserved']:.2f}x > {self.t.reserved_ratio:g}x")
        if p99 > limits["p99"] + 1e-9:
            unmet.append(f"p99 {p99 / base_p99:.2f}x > {self.t.p99_ratio:g}x")
        return {
            "format": PLAN_FORMAT,
            "platform": asdict(self.p), "targets": asdict(self.t),
            "models": {m: asdict(s) for m, s in self.models.items()},
            "packs": packs + alone,
            "router": {"policy": {"kind": "sesemi", "share_limit": p.concurrency, "warm_s": p.keep_alive_s}},
            "estimate": {
                "requests": self.n, "span_s": self.span_s,
                "billed_gb_s": billed, "billed_ratio": billed / base["billed"],
                "cold_start_rate": cold / self.n, "per_model_cold_start_rate": base["cold"] / self.n,
                "reserved_ratio": reserved / base["reserved"], "p99_s": p99, "per_model_p99_s": base_p99,
                "unmet": unmet,
            },
        }


def plan(models: Sequence[ModelSpec], times: Mapping[str, Sequence[float]], span_s: float,
         platform: PlatformSpec = PlatformSpec(), targets: Targets = Targets(),
         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    return Planner(models, times, span_s, platform, targets, progress).plan()


# -- reading a plan -------------------------------------------------------------------------------------

def check_plan(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        raise FormatError(f"not a pack plan (expected \"format\": \"{PLAN_FORMAT}\")")
    packs = doc.get("packs")
    if not isinstance(packs, list) or not packs:
        raise FormatError("pack plan: 'packs' must list at least one pack")
    seen = set()
    for i, p in enumerate(packs):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise FormatError(f"pack plan: packs[{i}] needs a name")
        if p["name"] in seen:
            raise FormatError(f"pack plan: pack {p['name']} twice")
        seen.add(p["name"])
        for key in ("memory_mb", "budget_mb", "pool_size"):
            v = p.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "budget_mb" else 1):
                raise FormatError(f"pack plan: pack {p['name']}: {key} must be a positive integer")
        if not isinstance(p.get("models"), list) or not p["models"]:
            raise FormatError(f"pack plan: pack {p['name']}: models must be a non-empty list")
        if not isinstance(p.get("policy", {}), dict):
            raise FormatError(f"pack plan: pack {p['name']}: policy must be an object")
    return doc


def pack_of_plan(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    for p in check_plan(doc)["packs"]:
        if p["name"] == name:
            return p
    raise FormatError(f"pack plan has no pack {name!r} (it has: {', '.join(p['name'] for p in doc['packs'])})")


def action_names(pack: Mapping[str, Any], prefix: str = "sesemi-") -> list[str]:
    base = f"{prefix}{pack['name']}"
    return [base] if pack["pool_size"] == 1 else [f"{base}-{i}" for i in range(1, pack["pool_size"] + 1)]


def router_config(doc: Mapping[str, Any], prefix: str = "sesemi-") -> dict[str, Any]:
    """The router configuration a plan stands for (router/config.py's format)."""
    check_plan(doc)
    router = dict(doc.get("router") or {})
    return {**router, "packs": [{"name": p["name"], "models": list(p["models"]),
                                 "actions": action_names(p, prefix), **({"policy": p["policy"]} if p.get("policy")
                                                                        else {})}
                                for p in doc["packs"]]}


def commands(doc: Mapping[str, Any], plan_path: str = "plan.json", image: str = "IMAGE",
             prefix: str = "sesemi-") -> list[str]:
    """The shell commands that build and deploy a plan: one pack file and one
    pool of actions per pack, each with its own memory limit and LRU budget.
    `{pack}` in `image` becomes each pack's name: under a hardware TEE the
    pack is measured inside its image (docs/deploy.md), so each pack has its
    own; without it, one image serves every pack and /init names the pack
    file (SESEMI_PACK, the sim backend only)."""
    check_plan(doc)
    conc = int((doc.get("platform") or {}).get("concurrency", 4))
    out = []
    for p in doc["packs"]:
        base = f"{prefix}{p['name']}"
        out.append(f"sesemi pack build --plan {plan_path} --pack {p['name']} --out {p['name']}.pack")
        rep = f" --replicas {p['pool_size']}" if p["pool_size"] > 1 else ""
        img = image.replace("{pack}", p["name"])
        pack_env = "" if "{pack}" in image else f" --env SESEMI_PACK=/packs/{p['name']}.pack"
        out.append(f"sesemi deploy {base}{rep} --image {img} --memory {p['memory_mb']} --concurrency {conc} "
                   f"--env SESEMI_MEMORY_BUDGET_MB={p['budget_mb']}{pack_env} --env SESEMI_KS_URL=$SESEMI_KS_URL")
    out.append(f"sesemi router serve --config {plan_path}")
    return out
