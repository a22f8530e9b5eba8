"""Errors across HTTP, in two shapes.

- Key service and router: a JSON body `{"error", "kind", "check"?}` with the
  HTTP status of the error.
- The action (OpenWhisk's blackbox contract): a refusal is an *application
  error*, HTTP 200 with `{"error": {"kind", "status", "message", "check"?}}`.
  OpenWhisk keeps only the `error` field of a result
  (core/entity/ActivationResult.scala, processRunResponseContent), so the kind
  and the status the router should answer travel inside it; any non-200
  answer would be a developer error and cost a warm container.

`raise_for` reads both, so the SDK works against an action, the platform and
the router alike.
"""

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


def action_error(exc: E.SesemiError, status: int | None = None) -> dict[str, Any]:
    """The `error` value of an action's answer: what OpenWhisk keeps of it."""
    err: dict[str, Any] = {"kind": type(exc).__name__, "status": status or exc.http_status, "message": str(exc)}
    if isinstance(exc, (E.PolicyError, E.AttestationError)):
        err["check"] = exc.check
    return {"error": err}


def parse_action_error(value: Any) -> tuple[str, int, str, str | None] | None:
    """(kind, status, message, check) of an action's structured `error`
    value, or None when it is not one (a platform string, say)."""
    if not isinstance(value, dict):
        return None
    kind, status, message = value.get("kind"), value.get("status"), value.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        return None
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        status = 502
    check = value.get("check")
    return kind, status, message, check if isinstance(check, str) else None


def raise_for(status: int, body: Any, what: str) -> None:
    """Turn an error response into the matching exception (client side): an
    error status, or a 200 whose body carries an action's structured error."""
    kind: Any
    msg: Any
    nested = parse_action_error(body.get("error")) if isinstance(body, dict) else None
    if nested is not None:
        kind, status, msg, check = nested
        body = {"error": msg, "kind": kind, **({"check": check} if check else {})}
    elif 200 <= status < 300:
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
