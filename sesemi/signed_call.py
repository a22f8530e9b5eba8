"""Signed owner/user calls to the key service (wire version 2).

Each call carries the principal id, a per-principal sequence number, a
timestamp and a random nonce, and an Ed25519 signature over (principal id,
method, request target, audience, timestamp, sequence number, nonce, body
hash). The audience is the id of the key service's pinned HPKE key
(hpke_box.key_id), so a signed call cannot be replayed against another key service.

Replays against this one are stopped by the sequence number, not the clock:
the key service keeps, per principal, the highest number it has accepted and
refuses any call that does not exceed it, across restarts and whatever the
host does to its clock. Strictly increasing, with no window for calls that
arrive out of order: a call the network withheld and delivers after a later
one (a `grant` held back until after the `revoke`) must fail, so the SDK
sends one signed call per principal at a time. One principal's calls never
touch another's counter.
The timestamp is only a coarse bound on how long a call withheld in transit
stays deliverable. The nonce makes the signed response (ks_response.py)
fresh.

The request target is signed exactly as sent (raw path and query), and only
one form is accepted: no percent-escapes, no `+`, at most one `?` and no
empty query, so no second spelling of a signed target reaches the routes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping

from .encoding import b64d, b64e, lp
from .errors import AuthError, FormatError, IntegrityError, ReplayError, StaleSequence
from .identity import Identity, is_principal_id, verify_signature

__all__ = ["StaleSequence", "sign", "verify", "check_target", "VerifiedCall"]

VERSION = "2"
H_VERSION = "X-Sesemi-Call-Version"
H_PRINCIPAL = "X-Sesemi-Principal"
H_TIMESTAMP = "X-Sesemi-Timestamp"
H_SEQ = "X-Sesemi-Seq"
H_NONCE = "X-Sesemi-Nonce"
H_SIGNATURE = "X-Sesemi-Signature"
WINDOW_S = 120
MAX_SEQ = 2**63 - 1  # fits every database's signed 64-bit integer
_MAX_TS_DIGITS = 12  # year 33658: a longer "timestamp" is junk, not a date
_TARGET = re.compile(r"/[A-Za-z0-9_./-]*(\?[A-Za-z0-9_.=&-]+)?")
_NONCE = re.compile(r"[0-9a-f]{32}")


def check_target(target: str) -> str:
    """The one canonical form of a request target that signed calls use."""
    if not isinstance(target, str) or len(target) > 2048 or _TARGET.fullmatch(target) is None:
        raise FormatError("request target is not in canonical form (signed calls use plain "
                          "/path?key=value with [A-Za-z0-9_.-] only, no escapes)")
    return target


def _message(pid: str, method: str, target: str, audience: str, ts: str, seq: str, nonce: str,
             body: bytes) -> bytes:
    return lp("sesemi/signed-call/v2", pid, method.upper(), target, audience, ts, seq, nonce,
              hashlib.sha256(body).digest())


def sign(identity: Identity, method: str, target: str, audience: str, body: bytes, now: float,
         seq: int) -> dict[str, str]:
    check_target(target)
    if not 1 <= seq <= MAX_SEQ:
        raise FormatError("sequence number out of range")
    pid, ts, s, nonce = identity.principal_id, str(int(now)), str(seq), secrets.token_hex(16)
    sig = identity.sign(_message(pid, method, target, audience, ts, s, nonce, body))
    return {H_VERSION: VERSION, H_PRINCIPAL: pid, H_TIMESTAMP: ts, H_SEQ: s, H_NONCE: nonce,
            H_SIGNATURE: b64e(sig)}


@dataclass(frozen=True)
class VerifiedCall:
    principal_id: str
    seq: int
    nonce: str
    timestamp: int


def _decimal(text: str, max_digits: int) -> int | None:
    """A canonical ASCII decimal (str.isdigit also takes '²' and other Unicode digits)."""
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    return int(text)


def verify(headers: Mapping[str, str], method: str, target: str, audience: str, body: bytes, now: float,
           public_key_of: Callable[[str], bytes | None],
           claim_seq: Callable[[str, int], None]) -> VerifiedCall:
    """`public_key_of(pid)` returns the registered key or None; `claim_seq(pid, seq)`
    records seq as the principal's newest call or raises StaleSequence. It runs
    only after the signature verified, so only a key holder moves its counter."""
    version = headers.get(H_VERSION, "")
    pid = headers.get(H_PRINCIPAL, "")
    ts_text = headers.get(H_TIMESTAMP, "")
    seq_text = headers.get(H_SEQ, "")
    nonce = headers.get(H_NONCE, "")
    sig = headers.get(H_SIGNATURE, "")
    if not (pid and ts_text and nonce and sig):
        raise AuthError("unsigned call: X-Sesemi-Principal/Timestamp/Seq/Nonce/Signature headers are required")
    if version != VERSION:
        raise AuthError(f"signed-call version {version[:8]!r} is not supported (this key service speaks "
                        f"version {VERSION}: update the client)")
    if not is_principal_id(pid):
        raise AuthError("malformed principal id")
    ts = _decimal(ts_text, _MAX_TS_DIGITS)
    seq = _decimal(seq_text, 19)
    if ts is None or seq is None or not 1 <= seq <= MAX_SEQ or _NONCE.fullmatch(nonce) is None:
        raise AuthError("malformed timestamp, sequence number or nonce")
    if abs(now - ts) > WINDOW_S:
        raise ReplayError(f"timestamp outside the {WINDOW_S}s window (check the clock)")
    pub = public_key_of(pid)
    if pub is None:
        raise AuthError("unknown principal (register first)")
    message = _message(pid, method, check_target(target), audience, ts_text, seq_text, nonce, body)
    try:
        verify_signature(pub, b64d(sig, "signature"), message)
    except (IntegrityError, FormatError) as exc:
        raise AuthError("signature does not verify") from exc
    claim_seq(pid, seq)
    return VerifiedCall(pid, seq, nonce, ts)
