"""Errors across HTTP: a JSON body `{"error", "kind", "check"?}` both ways."""

from __future__ import annotations

from typing import Any

from . import errors as E

_KINDS: dict[str, type[E.SesemiError]] = {
    cls.__name__: cls
    for cls in vars(E).values()
    if isinstance(cls, type) and issubclass(cls, E.SesemiError)
}


def error_body(exc: E.SesemiError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": str(exc), "kind": type(exc).__name__}
    if isinstance(exc, (E.PolicyError, E.AttestationError)):
        body["check"] = exc.check
    last_seq = getattr(exc, "last_seq", None)
    if isinstance(last_seq, int):
        body["last_seq"] = last_seq
    return body


def raise_for(status: int, body: Any, what: str) -> None:
    """Turn an error response into the matching exception (client side)."""
    if 200 <= status < 300:
        return
    msg = body.get("error") if isinstance(body, dict) else None
    kind = body.get("kind") if isinstance(body, dict) else None
    text = f"{what}: {msg or f'HTTP {status}'}"
    if kind == "PolicyError":
        exc = E.PolicyError(body.get("check", "?"))
        exc.args = (text,)
        raise exc
    if kind == "AttestationError":
        raise E.AttestationError(text, check=str(body.get("check", "attestation")))
    if kind == "StaleSequence" and type(body.get("last_seq")) is int and 0 <= body["last_seq"] < 2**63:
        raise E.StaleSequence(text, body["last_seq"])
    cls = _KINDS.get(kind or "")
    if cls is None:
        cls = {400: E.FormatError, 401: E.AuthError, 403: E.AccessDenied, 404: E.NotFound,
               409: E.Conflict}.get(status, E.UnavailableError if status >= 500 else E.SesemiError)
    raise cls(text)
