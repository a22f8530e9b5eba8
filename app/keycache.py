"""Keys released to this enclave, held in memory for a bounded time.

The TTL is what bounds revocation: after it, the next request refetches and
the key service judges the grant and the policy again.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable


class TtlCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._items: dict[Hashable, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            with self._lock:
                self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            self._items[key] = (self.clock() + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
