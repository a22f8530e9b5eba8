"""The request methods our servers recognise: RFC 9110's (section 9) and
PATCH (RFC 5789). A method outside this set is answered 501 Not Implemented,
one the resource does not allow 405 Method Not Allowed (RFC 9110, sections
15.6.2 and 15.5.6), by the action and the key service alike
(docs/reliability.md)."""

from __future__ import annotations

KNOWN = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def recognised(method: str) -> bool:
    return method in KNOWN
