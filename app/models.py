"""Models of this action's pack: decrypted in memory on first use, kept in
an LRU under a memory budget, each with its own interpreter pool.

The prototype cached one decrypted model, so alternating between two models
re-decrypted on every switch; here any number fit, up to the budget.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from sesemi.errors import FormatError, IntegrityError, ModelUnavailable
from sesemi.pack import Pack
from sesemi.sealed_model import open_stream

from .interpreter_pool import InterpreterPool


@dataclass
class LoadedModel:
    model_id: str
    pool: InterpreterPool
    cost_bytes: int
    in_use: int = 0


@dataclass
class ModelStats:
    loads: int = 0
    evictions: int = 0
    load_seconds: list[float] = field(default_factory=list)
    # Per load: seconds for key fetch, pack read, decryption and interpreter build
    # (the cold-start breakdown of docs/performance.md).
    load_phases: list[dict[str, float]] = field(default_factory=list)


class ModelStore:
    def __init__(self, pack: Pack, pool_size: int, interp_threads: int, budget_bytes: int,
                 model_key: Callable[[str], bytes]) -> None:
        self.pack = pack
        self.pool_size = pool_size
        self.interp_threads = interp_threads
        self.budget_bytes = budget_bytes
        self._model_key = model_key
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self.stats = ModelStats()

    def acquire(self, model_id: str) -> LoadedModel:
        self.pack.entry(model_id)  # NotFound for models outside the pack, before any key fetch
        with self._lock:
            m = self._loaded.get(model_id)
            if m is not None:
                self._loaded.move_to_end(model_id)
                m.in_use += 1
                return m
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._lock:
                m = self._loaded.get(model_id)
                if m is not None:
                    m.in_use += 1
                    return m
                # Evict BEFORE decrypting, by the size the manifest states, so the
                # budget holds at the peak and not only afterwards.
                self._make_room(self._cost(self.pack.entry(model_id).plaintext_len))
            m = self._load(model_id)
            with self._lock:
                self._loaded[model_id] = m
                m.in_use += 1
            return m

    def release(self, m: LoadedModel) -> None:
        with self._lock:
            m.in_use -= 1

    @staticmethod
    def _cost(plaintext_len: int) -> int:
        # The plaintext buffer plus a rough allowance for the pooled interpreters' arenas.
        return 2 * plaintext_len

    def _load(self, model_id: str) -> LoadedModel:
        t0 = time.perf_counter()
        key = self._model_key(model_id)
        t1 = time.perf_counter()
        reader = self.pack.reader(model_id)
        t2 = time.perf_counter()
        try:
            content = open_stream(reader.read, reader.length, key, model_id)
            reader.verify()  # the manifest digest, over exactly the bytes that were decrypted
            t3 = time.perf_counter()
            pool = InterpreterPool(content, self.pool_size, self.interp_threads)
        except (IntegrityError, FormatError) as exc:
            raise ModelUnavailable(f"model {model_id!r} cannot be loaded: {exc}") from None
        t4 = time.perf_counter()
        self.stats.loads += 1
        self.stats.load_seconds.append(t4 - t0)
        # Reading the pack and decrypting are interleaved chunk by chunk: one figure.
        self.stats.load_phases.append({"key_fetch_s": t1 - t0, "read_and_decrypt_s": t3 - t2,
                                       "interpreter_build_s": t4 - t3})
        del self.stats.load_phases[:-100]
        return LoadedModel(model_id, pool, cost_bytes=self._cost(len(content)))

    def _make_room(self, need: int) -> None:
        used = sum(m.cost_bytes for m in self._loaded.values())
        for mid in list(self._loaded):
            if used + need <= self.budget_bytes:
                break
            victim = self._loaded[mid]
            if victim.in_use == 0:
                del self._loaded[mid]
                used -= victim.cost_bytes
                self.stats.evictions += 1

    def invoke_summary(self) -> dict[str, dict[str, float]]:
        """p50 / p99 (ms) of each loaded model's recent invokes: a summary, not
        per-request times (this is on the unauthenticated /stats)."""
        with self._lock:
            pools = {mid: sorted(m.pool.invoke_s) for mid, m in self._loaded.items()}
        return {mid: {"n": len(xs), "p50_ms": 1e3 * xs[len(xs) // 2], "p99_ms": 1e3 * xs[(len(xs) * 99) // 100]}
                for mid, xs in pools.items() if xs}

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    @property
    def loaded_ids(self) -> list[str]:
        with self._lock:
            return list(self._loaded)
