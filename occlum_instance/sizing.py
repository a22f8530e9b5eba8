"""The sizing rule for the Occlum appliances (docs/occlum-sizing.md explains it).

Without EDMM an SGX enclave commits all of its memory when it is created, and
Occlum reserves `user_space_size` for everything the LibOS processes map:
the interpreter and every shared object it loads (Occlum copies a mapped
file into enclave memory instead of paging it in), the brk heap, glibc's
malloc arenas, every thread's stack, and the data. Too little fails at run
time with ENOMEM deep inside a request; too much wastes EPC. So the numbers
are computed, from:

  * Python itself: the measured footprint of the interpreter after importing
    the appliance's modules (PYTHON_RUNTIME_MIB; tests/static measures it
    again on every run and fails if the constant no longer covers it);
  * the pack: each model's plaintext is decrypted into one buffer that all of
    its interpreters share, and each interpreter allocates a tensor arena;
    the action's LRU keeps models loaded up to SESEMI_MEMORY_BUDGET_MB;
  * the thread pool: HTTP connection threads, LiteRT worker threads, stacks;
  * the requests in flight: each /run body is held about six times over
    (body, parsed JSON, ciphertext, plaintext, tensors, response).

`need()` is the single implementation; render.py writes its result into
Occlum.json and checks.py verifies committed and rendered configs against it.
It depends on nothing but the standard library so the builder can run it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

MiB = 1 << 20

# Measured footprint (anonymous memory + bytes of every mapped shared object)
# of CPython 3.11 after importing the appliance's modules, rounded up with
# about a third of headroom. Measured on x86-64 glibc: action 143 MiB
# (117 MiB of shared objects: numpy+OpenBLAS, LiteRT, cryptography, libpython),
# key service 79 MiB.
PYTHON_RUNTIME_MIB = {"action": 192, "keyservice": 128}

REQUEST_COPIES = 6            # copies of one /run body alive while it is served
GLIBC_ARENA_MIB = 64          # address space glibc reserves per extra malloc arena
SQLITE_PER_CONNECTION_MIB = 8  # page cache + statement memory per key-service connection
# The key service's bounded caches (keyservice/store.py): 32,768 checked rows
# (~1 KiB each), 8,192 tokens (~2.5 KiB each), 65,536 log nodes (~150 B each).
KS_CACHES_MIB = 64
SAFETY_FACTOR = 1.25          # allocator fragmentation, Occlum VM alignment
KERNEL_HEAP_BASE_MIB = 160    # LibOS kernel heap: SEFS caches, sockets, file tables
KERNEL_HEAP_PER_THREAD_MIB = 2
UNTRUSTED_OVERHEAD_MIB = 128  # outside the enclave: PAL, host threads, Occlum's loader
# Helper threads not counted below: Python's, LiteRT's, Occlum's and, in the
# action, its own pack digest worker (sesemi/background_digest.py, one per process).
THREAD_SLACK = 8
# TCSs kept free for the PAL itself. Without EDMM (our configs), Occlum's
# gen_internal_conf makes TCSNum = TCSMaxNum = max_num_of_threads, and every
# LibOS thread holds one TCS while it runs (src/pal/src/ocalls/spawn.c). The
# PAL's interrupt thread enters the enclave every 25 ms to broadcast signals
# (occlum_ecall_broadcast_interrupts in src/pal/src/pal_interrupt_thread.c)
# and exits the whole process when that ECall fails, e.g. with every TCS busy.
PAL_TCS_RESERVE = 1

APPLIANCES = ("action", "keyservice")


@dataclass(frozen=True)
class Settings:
    """What the operator decides; each maps to an env.default entry (trusted)."""

    concurrency: int = 8          # activations one container serves at once (`wsk -c`)
    pool_size: int = 2            # interpreters per model (SESEMI_POOL_SIZE)
    interp_threads: int = 1       # LiteRT threads per interpreter (SESEMI_INTERP_THREADS)
    http_threads: int = 0         # SESEMI_THREADS; 0: concurrency + 4
    memory_budget_mb: int = 512   # decrypted models kept loaded (SESEMI_MEMORY_BUDGET_MB)
    request_mb: int = 2           # largest /run body expected (OpenWhisk's payload limit)
    arena_factor: float = 1.0     # tensor arena per interpreter, in model sizes ...
    arena_floor_mb: int = 4       # ... but at least this much
    stack_mb: int = 4             # process.default_stack_size: every thread's stack
    heap_mb: int = 128            # process.default_heap_size (brk area)
    malloc_arena_max: int = 2     # MALLOC_ARENA_MAX
    key_ttl_s: int = 60           # SESEMI_KEY_TTL
    ks_threads: int = 8           # key service: SESEMI_THREADS
    ks_max_body_mb: int = 1       # key service request limit (KeyServiceConfig.max_body_bytes)

    def __post_init__(self) -> None:
        for name in ("concurrency", "pool_size", "interp_threads", "memory_budget_mb", "request_mb",
                     "arena_floor_mb", "stack_mb", "heap_mb", "malloc_arena_max", "key_ttl_s", "ks_threads",
                     "ks_max_body_mb"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"sizing setting {name} must be >= 1")
        if self.http_threads < 0 or self.arena_factor < 0:
            raise ValueError("http_threads and arena_factor must be >= 0")

    @property
    def effective_http_threads(self) -> int:
        return self.http_threads or self.concurrency + 4


@dataclass(frozen=True)
class Need:
    """What an appliance needs; sizes in MiB. `terms` shows the arithmetic."""

    appliance: str
    user_space_mib: int
    kernel_heap_mib: int
    max_threads: int              # max_num_of_threads: app_threads + tcs_reserve, rounded up
    stack_mib: int
    heap_mib: int
    openwhisk_memory_mb: int
    terms: dict = field(default_factory=dict)
    app_threads: int = 0          # LibOS threads the appliance may run at once
    tcs_reserve: int = PAL_TCS_RESERVE

    def as_dict(self) -> dict:
        return asdict(self)


def _ceil_to(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def model_resident_bytes(plaintext_len: int, s: Settings) -> int:
    """One loaded model: the shared plaintext buffer plus a tensor arena per interpreter."""
    arena = max(int(s.arena_factor * plaintext_len), s.arena_floor_mb * MiB)
    return plaintext_len + s.pool_size * arena


def loaded_models(plaintext_lens: Iterable[int], s: Settings) -> list[int]:
    """The largest set of models the action can hold at once. The action's LRU
    charges 2x plaintext per model against the budget and always admits one
    model, however large; take the biggest residents first (worst case)."""
    sizes = sorted(plaintext_lens, key=lambda n: model_resident_bytes(n, s), reverse=True)
    budget = s.memory_budget_mb * MiB
    chosen: list[int] = []
    charged = 0
    for n in sizes:
        if not chosen or charged + 2 * n <= budget:
            chosen.append(n)
            charged += 2 * n
    return chosen


def need(appliance: str, settings: Settings | None = None, plaintext_lens: Iterable[int] = ()) -> Need:
    s = settings or Settings()
    if appliance not in APPLIANCES:
        raise ValueError(f"unknown appliance {appliance!r}")
    terms: dict[str, float] = {"python_runtime": PYTHON_RUNTIME_MIB[appliance]}
    if appliance == "action":
        models = loaded_models(list(plaintext_lens), s)
        if not models:
            raise ValueError("the action needs the pack's model sizes")
        threads = 1 + s.effective_http_threads + len(models) * s.pool_size * s.interp_threads + THREAD_SLACK
        terms["models"] = sum(model_resident_bytes(n, s) for n in models) / MiB
        terms["requests"] = s.concurrency * REQUEST_COPIES * s.request_mb
    else:
        threads = 1 + s.ks_threads + 2 + THREAD_SLACK  # waitress: main + I/O loop
        terms["requests"] = s.ks_threads * 4 * s.ks_max_body_mb
        terms["sqlite"] = s.ks_threads * SQLITE_PER_CONNECTION_MIB
        terms["caches"] = KS_CACHES_MIB
    max_threads = _ceil_to(threads + PAL_TCS_RESERVE, 8)
    terms["stacks"] = max_threads * s.stack_mb
    terms["malloc_arenas"] = (s.malloc_arena_max - 1) * GLIBC_ARENA_MIB
    working_set = sum(terms.values())
    terms["safety"] = working_set * (SAFETY_FACTOR - 1)
    terms["brk_heap"] = s.heap_mb
    user_space = _ceil_to(working_set * SAFETY_FACTOR + s.heap_mb, 64)
    kernel_heap = _ceil_to(KERNEL_HEAP_BASE_MIB + KERNEL_HEAP_PER_THREAD_MIB * max_threads, 32)
    memory = _ceil_to(user_space + kernel_heap + UNTRUSTED_OVERHEAD_MIB, 64)
    return Need(appliance, user_space, kernel_heap, max_threads, s.stack_mb, s.heap_mb, memory,
                {k: round(v, 2) for k, v in terms.items()}, app_threads=threads, tcs_reserve=PAL_TCS_RESERVE)


def parse_size(text: str) -> int:
    """Occlum's memory-size syntax: an integer and one of B, KB, MB, GB, TB
    (powers of 1024), e.g. "256MB". Raises ValueError like Occlum refuses."""
    units = (("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40), ("B", 1))
    if not isinstance(text, str):
        raise ValueError(f"memory size {text!r} is not a string")
    t = text.strip()
    for unit, factor in units:
        if t.endswith(unit):
            number = t[: -len(unit)].strip()
            if not number.isdigit():
                raise ValueError(f"memory size {text!r}: no number before {unit}")
            return int(number) * factor
    raise ValueError(f"memory size {text!r} has no unit (B, KB, MB, GB, TB)")


def mib(n: int) -> str:
    return f"{n}MB"
