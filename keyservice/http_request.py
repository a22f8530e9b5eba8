"""What every key-service route reads from a request, and how it answers: JSON
bodies and answers, the request target signatures cover, bounded numbers, the
enclave's bearer token."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import AuthError, FormatError


def json_answer(obj: Any, status: int = 200) -> Response:
    return Response(json_dumps(obj), status=status, mimetype="application/json")


def body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        return json_loads(raw)
    except JSONDecodeError:
        raise FormatError("request body is not valid JSON") from None


def target() -> str:
    """The request target as it came on the request line (waitress and werkzeug
    both pass it as REQUEST_URI): what signatures cover."""
    return request.environ.get("REQUEST_URI") or request.full_path.rstrip("?")


def request_body() -> bytes:
    """What the response signature binds the answer to: the body as received
    (empty when it was refused unread, e.g. for its size)."""
    try:
        return request.get_data(cache=True)
    except HTTPException:
        return b""


def bearer() -> str:
    """The attestation token of an enclave's call."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise AuthError("missing attestation token (Authorization: Bearer ...)")
    return auth[7:].strip()


def count(text: str, what: str, low: int, high: int) -> int:
    # isascii: str.isdigit() also holds for digits int() refuses ("²") or reads ("١")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not low <= int(text) <= high:
        raise FormatError(f"{what}: expected a whole number from {low} to {high}")
    return int(text)


def known_size() -> int:
    """The tree size the caller says it holds (0: none, or unreadable)."""
    known = request.headers.get("X-Sesemi-KS-Known-Size", "")
    return int(known) if known.isascii() and known.isdigit() and len(known) <= 19 else 0
