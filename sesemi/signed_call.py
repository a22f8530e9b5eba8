"""Signed owner/user calls to the key service.

Each call carries the principal id, a timestamp and a random nonce, and an
Ed25519 signature over (method, path, audience, timestamp, nonce, body hash).
The audience is the key service's pinned HPKE key, so a signed call cannot be
replayed against another key service; the nonce, remembered for the
timestamp window, stops replays against this one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping

from .encoding import b64d, b64e, lp
from .errors import AuthError, FormatError, IntegrityError, ReplayError
from .identity import Identity, is_principal_id, verify_signature

H_PRINCIPAL = "X-Sesemi-Principal"
H_TIMESTAMP = "X-Sesemi-Timestamp"
H_NONCE = "X-Sesemi-Nonce"
H_SIGNATURE = "X-Sesemi-Signature"
WINDOW_S = 120


def _message(method: str, path: str, audience: str, ts: str, nonce: str, body: bytes) -> bytes:
    return lp("sesemi/signed-call/v1", method.upper(), path, audience, ts, nonce, hashlib.sha256(body).digest())


def sign(identity: Identity, method: str, path: str, audience: str, body: bytes, now: float) -> dict[str, str]:
    ts = str(int(now))
    nonce = secrets.token_hex(16)
    sig = identity.sign(_message(method, path, audience, ts, nonce, body))
    return {H_PRINCIPAL: identity.principal_id, H_TIMESTAMP: ts, H_NONCE: nonce, H_SIGNATURE: b64e(sig)}


@dataclass(frozen=True)
class VerifiedCall:
    principal_id: str
    nonce: str
    timestamp: int


def verify(headers: Mapping[str, str], method: str, path: str, audience: str, body: bytes, now: float,
           public_key_of: Callable[[str], bytes | None],
           remember_nonce: Callable[[str, str, float], bool]) -> VerifiedCall:
    """`public_key_of(pid)` returns the registered key or None; `remember_nonce`
    returns False when (pid, nonce) was already seen within the window."""
    pid = headers.get(H_PRINCIPAL, "")
    ts = headers.get(H_TIMESTAMP, "")
    nonce = headers.get(H_NONCE, "")
    sig = headers.get(H_SIGNATURE, "")
    if not (pid and ts and nonce and sig):
        raise AuthError("unsigned call: X-Sesemi-Principal/Timestamp/Nonce/Signature headers are required")
    if not is_principal_id(pid):
        raise AuthError("malformed principal id")
    # ASCII digits only (str.isdigit also takes '²', which int() refuses), and a
    # length that keeps int() and the window arithmetic small.
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12 or len(nonce) != 32:
        raise AuthError("malformed timestamp or nonce")
    if abs(now - int(ts)) > WINDOW_S:
        raise ReplayError(f"timestamp outside the {WINDOW_S}s window (check the clock)")
    pub = public_key_of(pid)
    if pub is None:
        raise AuthError("unknown principal (register first)")
    try:
        verify_signature(pub, b64d(sig, "signature"), _message(method, path, audience, ts, nonce, body))
    except (IntegrityError, FormatError) as exc:
        raise AuthError("signature does not verify") from exc
    if not remember_nonce(pid, nonce, int(ts) + WINDOW_S):
        raise ReplayError("replayed call (nonce already used)")
    return VerifiedCall(pid, nonce, int(ts))
