"""Keys released to this enclave, held in memory for a bounded time.

The TTL and a count bound revocation: after the TTL, or after the number of
uses the key service stated (signed) in the release, whichever comes first,
the next request refetches and the key service judges the grant and the
policy again. The count matters because the TTL runs on this enclave's
clock, which under SGX is the host's: a host that stalls the clock still
cannot stretch a revoked grant past the count.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable


class TtlCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._items: dict[Hashable, list] = {}  # key -> [expiry, value, uses left or None]
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value, counting one use; None once expired or used up."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= self.clock():
                del self._items[key]
                return None
            if item[2] is not None:
                item[2] -= 1
                if item[2] <= 0:
                    del self._items[key]  # this was the last use
            return item[1]

    def peek(self, key: Hashable) -> Any:
        """The value without counting a use; None once expired or used up."""
        with self._lock:
            item = self._items.get(key)
            return None if item is None or item[0] <= self.clock() else item[1]

    def put(self, key: Hashable, value: Any, max_uses: int | None = None) -> None:
        """`max_uses`: the uses left (None: the TTL alone); 0 keeps nothing."""
        with self._lock:
            if max_uses is not None and max_uses <= 0:
                self._items.pop(key, None)
                return
            self._items[key] = [self.clock() + self.ttl_s, value, max_uses]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class RefusalCache:
    """(model, user) pairs the key service just refused, for `ttl_s`, at most
    `max_entries` (oldest dropped first). The user id comes from an
    unauthenticated envelope: without this every junk request for the same
    ungranted user cost a key-service round trip and an audit row there. The
    price: a user granted or enrolled within `ttl_s` of a refusal is refused
    until it expires, on this action (the session keeps `ttl_s` at most the
    key TTL, so a grant takes effect as fast as a revocation does)."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._items: "OrderedDict[Hashable, float]" = OrderedDict()  # key -> expiry, oldest first
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            expiry = self._items.get(key)
            if expiry is None:
                return False
            if expiry <= self.clock():
                del self._items[key]
                return False
            return True

    def add(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = self.clock() + self.ttl_s
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
