"""Which bound a failed urllib3 call hit, for sesemi.timeouts.explain."""

from __future__ import annotations

import urllib3


def bound_of(exc: Exception) -> str | None:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3, but is a refusal, not a timeout.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return None
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connect"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "read"
    return None
