"""Bounds on what callers without a credential can make the key service keep
(docs/keyservice.md, "Bounds"): per-address rate limits and refusal counters, both in
bounded memory; the tables they would otherwise grow have caps and a purge
on a timer (KeyService.maintenance)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from typing import Callable

from sesemi.errors import RateLimited


def address_key(address: str) -> str:
    """The unit that per-address bounds count: an IPv4 address, or an IPv6 /64.
    A /64 is what one subscriber is routed (RFC 6177), and its holder may send
    from any of its 2^64 addresses, so per-/128 bounds would bound nothing.
    An IPv4 client of a dual-stack listener (::ffff:a.b.c.d) counts as its
    IPv4 address: those all share one /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # scope id: same host
    except ValueError:
        return address  # a Unix socket path, say: as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """A token bucket per client address. At most `max_addresses` buckets are
    kept (least recently used dropped), so the table itself is bounded; an
    attacker with many addresses gets a fresh bucket each, which the global
    caps on the tables behind it still bound."""

    def __init__(self, what: str, rate_per_s: float, burst: int, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.rate, self.burst, self.max_addresses = what, rate_per_s, burst, max_addresses
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str) -> None:
        address = address_key(address)
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(address, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            if tokens < 1:
                self._buckets[address] = (tokens, now)
                raise RateLimited(f"too many {self.what} from this address: retry in "
                                  f"{(1 - tokens) / self.rate:.0f} s")
            self._buckets[address] = (tokens - 1, now)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class RefusalCounter:
    """Refusals without a credential, counted per (event, check) rather than
    written one audit row each; `drain()` hands over, per key, the count and
    the first reason of the window, for one audit row each. Check names come
    from the code, and at most `max_keys` are kept (the rest are counted
    under "other")."""

    def __init__(self, max_keys: int = 64) -> None:
        self.max_keys = max_keys
        self._counts: dict[tuple[str, str, str | None], list] = {}
        self._lock = threading.Lock()

    def count(self, event: str, check: str, reason: str = "", model_id: str | None = None) -> None:
        """`model_id`: the model a refusal concerned, so its owner sees the row."""
        with self._lock:
            key = (event, check, model_id)
            if key not in self._counts and len(self._counts) >= self.max_keys:
                key = (event, "other", None)
            entry = self._counts.setdefault(key, [0, reason[:160]])
            entry[0] += 1

    def drain(self) -> dict[tuple[str, str, str | None], tuple[int, str]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return {k: (v[0], v[1]) for k, v in counts.items()}
