"""Bounded waits: a connect and a read timeout for every client call, sized for
its job, and a total budget for the action's key fetches.

Each bound has a name, and the error that reports it says which one expired,
so an operator can tell a partition (connect), a frozen or overloaded peer
(read) and a slow chain of calls (budget) apart. Defaults are chosen for the
job, and every one can be changed: `SESEMI_CONNECT_TIMEOUT` and
`SESEMI_READ_TIMEOUT` (SDK and CLI; the CLI's `--connect-timeout` and
`--read-timeout` win), `SESEMI_KS_BUDGET` (the action), the router's
`connect_timeout_s` and `activation_timeout_s`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from . import stdlib_http
from .errors import FormatError, TimeoutExpired, UnavailableError

ENV_CONNECT = "SESEMI_CONNECT_TIMEOUT"
ENV_READ = "SESEMI_READ_TIMEOUT"


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float

    def __post_init__(self) -> None:
        for name, v in (("connect timeout", self.connect_s), ("read timeout", self.read_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise FormatError(f"{name} must be a number of seconds in (0, 3600]")

    def with_env(self, env: Mapping[str, str] | None = None) -> "Timeouts":
        """`SESEMI_CONNECT_TIMEOUT` / `SESEMI_READ_TIMEOUT` override the job's defaults."""
        env = os.environ if env is None else env
        changes = {}
        for field, name in (("connect_s", ENV_CONNECT), ("read_s", ENV_READ)):
            if env.get(name):
                try:
                    changes[field] = float(env[name])
                except ValueError:
                    raise FormatError(f"{name}: not a number of seconds") from None
        return replace(self, **changes)

    def overridden(self, connect_s: float | None = None, read_s: float | None = None) -> "Timeouts":
        return replace(self, connect_s=connect_s if connect_s is not None else self.connect_s,
                       read_s=read_s if read_s is not None else self.read_s)


# Owner and user calls: a signature check and a committed SQLite write or two.
KEY_SERVICE = Timeouts(connect_s=5.0, read_s=15.0)
# One inference: may include a cold start (pack, attestation, model load) and
# the platform's own queueing; OpenWhisk's default activation limit is 60 s.
INFERENCE = Timeouts(connect_s=5.0, read_s=90.0)
# The action's calls to the key service, on the request path: each short, all
# of one request's calls within ENCLAVE_KEY_BUDGET_S, well under OpenWhisk's
# activation limit, then a retryable refusal.
ENCLAVE_KEYS = Timeouts(connect_s=1.0, read_s=3.0)
ENCLAVE_KEY_BUDGET_S = 5.0


class Deadline:
    """A total budget over several calls (time passed in, so tests control it)."""

    def __init__(self, budget_s: float, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.what = what
        self.clock = clock
        self.end = clock() + budget_s

    def left(self) -> float:
        left = self.end - self.clock()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> TimeoutExpired:
        return TimeoutExpired(f"{self.what}: total budget ({self.budget_s:g} s) expired", bound="budget")


def request_timeout(t: Timeouts, deadline: Deadline | None) -> tuple[tuple[float, float], bool]:
    """(connect, read) seconds for one call, clipped to what the budget has left;
    True when the budget, not the call's own bound, is the tighter one."""
    if deadline is None:
        return (t.connect_s, t.read_s), False
    left = deadline.left()
    return (min(t.connect_s, left), min(t.read_s, left)), left < t.read_s


def explain(exc: Exception, what: str, url: str, t: Timeouts,
            deadline: Deadline | None = None, clipped: bool = False,
            bound_of: Callable[[Exception], str | None] | None = None) -> UnavailableError:
    """The error for a failed call, naming the bound that expired (if one did).
    `bound_of`: how the transport tells its timeouts apart ("connect", "read"
    or None); sesemi.stdlib_http's errors by default, urllib3's through
    sesemi.urllib3_errors.bound_of (not imported here: the action, which
    imports this module, carries no urllib3)."""
    bound = (bound_of or stdlib_http.bound_of)(exc)
    if bound is not None:
        if clipped and deadline is not None:
            return deadline.expired()
        if bound == "connect":
            return TimeoutExpired(f"{what}: connect timeout ({t.connect_s:g} s) expired reaching {url}",
                                  bound="connect")
        return TimeoutExpired(f"{what}: read timeout ({t.read_s:g} s) expired: {url} accepted the "
                              "connection but did not answer", bound="read")
    kind = str(exc) if isinstance(exc, stdlib_http.ConnectFailed) else type(exc).__name__
    return UnavailableError(f"{what}: cannot reach {url} ({kind})")
