"""The action's memory of served requests: a (model, user, request id) served
once is refused again (ReplayError).

Bounded twice, so an unauthenticated flood cannot grow it: by count (the
oldest entry goes first) and by age (entries older than the window go, so an
idle action gives the memory back). Each entry is a 16-byte digest, not the
three strings: about 150 bytes per entry with the dict's overhead, some 15 MB
at the 100,000 default (measured in tests/reliability/test_load.py). A replay
older than the window, or pushed out by a flood, only recomputes the same
answer encrypted to the same user (docs/protocol.md), so the bounds trade
memory for nothing a host could not already do by replaying to another action.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Callable

from sesemi.encoding import lp
from sesemi.errors import ReplayError

MAX_ENTRIES = 100_000
MAX_AGE_S = 3600.0


class ReplayWindow:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, model_id: str, user_id: str, request_id: str) -> None:
        key = hashlib.blake2b(lp(model_id, user_id, request_id), digest_size=16).digest()
        now = self.clock()
        with self._lock:
            seen = self._seen
            while seen:
                oldest, t = next(iter(seen.items()))
                if now - t <= self.max_age_s and len(seen) < self.max_entries:
                    break
                del seen[oldest]
            if key in seen:
                raise ReplayError("request id already served (replayed request)")
            seen[key] = now
