"""How many retries the router may spend: a share of the requests it takes,
plus a small floor per second (the retry budget of Finagle's RetryBudget and
gRPC's retry throttling). Without it, a request that no action can serve,
such as junk whose every attempt ends in a retryable refusal, costs
`max_attempts` activations; with it, a flood of them costs at most
1 + `percent` activations each, plus the floor (docs/reliability.md)."""

from __future__ import annotations

import threading
import time
from typing import Callable


class RetryBudget:
    def __init__(self, percent: float, min_per_s: float, clock: Callable[[], float] = time.monotonic,
                 window_s: float = 10.0) -> None:
        """`percent` of each request is deposited; `min_per_s` accrues with time;
        at most `window_s` seconds' floor (and at least one retry) is kept."""
        self.percent, self.min_per_s, self.clock = percent, min_per_s, clock
        self.cap = max(1.0, min_per_s * window_s)
        self._tokens, self._at = self.cap, clock()
        self._lock = threading.Lock()

    def deposit(self) -> None:
        """One request taken."""
        with self._lock:
            self._tokens = min(self.cap, self._tokens + self.percent)

    def withdraw(self) -> bool:
        """One retry, if the budget has it."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.cap, self._tokens + max(0.0, now - self._at) * self.min_per_s)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True
