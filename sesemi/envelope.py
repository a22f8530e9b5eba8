"""Request and response envelopes between a user and an inference enclave.

AES-256-GCM under the user's request key for (user, model). The AAD binds
model id, user id, request id and direction, so a ciphertext replays into no
other context. Nonces are random 96-bit: with a fresh key per (user, model)
the collision bound stays negligible below 2**32 messages per key, which the
client SDK enforces by rotating long before (see docs/protocol.md).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .encoding import b64d, b64e, lp
from .errors import FormatError, IntegrityError
from .names import check_model_id

VERSION = 1
REQUEST = "req"
RESPONSE = "resp"
_MAX_ID = 128


def new_request_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def new_request_id() -> str:
    return secrets.token_hex(16)


def aad(model_id: str, user_id: str, request_id: str, direction: str) -> bytes:
    return lp("sesemi/envelope/v1", model_id, user_id, request_id, direction)


@dataclass(frozen=True)
class Envelope:
    model_id: str
    user_id: str
    request_id: str
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "model_id": self.model_id,
            "user_id": self.user_id,
            "request_id": self.request_id,
            "nonce": b64e(self.nonce),
            "ciphertext": b64e(self.ciphertext),
        }

    @classmethod
    def from_json(cls, obj: Any) -> "Envelope":
        if not isinstance(obj, dict):
            raise FormatError("envelope: expected a JSON object")
        v = obj.get("v")
        # Exact types: `True == 1` in Python, so a plain comparison accepts "v": true.
        if type(v) is not int or v != VERSION:
            raise FormatError(f"envelope: unsupported version {v!r}")
        check_model_id(obj.get("model_id"))
        fields = {}
        for name in ("model_id", "user_id", "request_id"):
            val = obj.get(name)
            if not isinstance(val, str) or not val or len(val) > _MAX_ID:
                raise FormatError(f"envelope: '{name}' must be a non-empty string of at most {_MAX_ID} chars")
            fields[name] = val
        nonce = b64d(obj.get("nonce"), "envelope.nonce")
        if len(nonce) != 12:
            raise FormatError("envelope.nonce: expected 12 bytes")
        ct = b64d(obj.get("ciphertext"), "envelope.ciphertext")
        if len(ct) < 16:
            raise FormatError("envelope.ciphertext: shorter than a GCM tag")
        return cls(nonce=nonce, ciphertext=ct, **fields)


def seal(key: bytes, model_id: str, user_id: str, request_id: str, direction: str, plaintext: bytes) -> Envelope:
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, aad(model_id, user_id, request_id, direction))
    return Envelope(model_id, user_id, request_id, nonce, ct)


def open_(key: bytes, env: Envelope, direction: str) -> bytes:
    try:
        return AESGCM(key).decrypt(
            env.nonce, env.ciphertext, aad(env.model_id, env.user_id, env.request_id, direction)
        )
    except InvalidTag as exc:
        raise IntegrityError(
            f"{'request' if direction == REQUEST else 'response'} does not authenticate "
            "(tampered, replayed into another context, or encrypted under another key)"
        ) from exc
