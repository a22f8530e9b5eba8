"""Request and response envelopes between a user and an inference enclave.

AES-256-GCM with the AAD binding model id, user id, request id and
direction, so a ciphertext replays into no other context.

Version 2: every message has its own key. NIST SP 800-38D §8.3 allows at most
2**32 encryptions with random 96-bit nonces per key, and one (user, model)
request key draws two per inference (about 25 days at 1,000 inferences/s), and
nothing rotated it. So the AES key of a message is HKDF-SHA256(request key,
info = (model id, user id, request id, direction, nonce)) with the message's
random nonce: each derived key encrypts one message, and the request key is
used only as an HKDF key, which has no such budget. Two messages share a key
only if they share request id, direction and a 96-bit random nonce.

Version 3: a response's plaintext is an answer (sesemi/answer.py): the
labels, and a sealed refusal for a request that authenticated, are inside
the ciphertext, so the platform can neither alter them nor read the reason.
Version 4: an envelope names the version of the request key that sealed it
(`kv`, from `sesemi user enroll`; authenticated in the AAD). An action that
holds an older version of that user's key fetches the new one at once, so a
re-enrolment takes effect on the next request instead of after the key TTL,
and a request under the old version no longer authenticates there.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .encoding import b64d, b64e, lp
from .errors import FormatError, IntegrityError
from .names import check_model_id

VERSION = 4
MAX_KEY_VERSION = 1 << 31
REQUEST = "req"
RESPONSE = "resp"
_MAX_ID = 128
_FIELDS = frozenset({"v", "kv", "model_id", "user_id", "request_id", "nonce", "ciphertext"})


def new_request_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def new_request_id() -> str:
    return secrets.token_hex(16)


def aad(model_id: str, user_id: str, request_id: str, direction: str, key_version: int = 1) -> bytes:
    return lp("sesemi/envelope/v4", model_id, user_id, request_id, direction, str(key_version))


def message_key(key: bytes, model_id: str, user_id: str, request_id: str, direction: str, nonce: bytes) -> bytes:
    """The one-message AES-256 key (module docstring)."""
    return HKDF(SHA256(), 32, salt=None,
                info=lp("sesemi/envelope-key/v3", model_id, user_id, request_id, direction, nonce)).derive(key)


@dataclass(frozen=True)
class Envelope:
    model_id: str
    user_id: str
    request_id: str
    nonce: bytes
    ciphertext: bytes
    key_version: int = 1  # of the request key that sealed it

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "kv": self.key_version,
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
        extra = set(obj) - _FIELDS
        if extra:
            # Through OpenWhisk the envelope is the activation's parameters: an
            # extra field could name an init parameter (SESEMI_KS_URL) and
            # reach a cold container's /init. Refuse rather than ignore.
            raise FormatError(f"envelope: unknown field(s) {', '.join(sorted(map(repr, extra))[:5])}")
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
        kv = obj.get("kv")
        if type(kv) is not int or not 1 <= kv <= MAX_KEY_VERSION:
            raise FormatError(f"envelope: 'kv' (request key version) must be an integer in 1..{MAX_KEY_VERSION}")
        return cls(nonce=nonce, ciphertext=ct, key_version=kv, **fields)


def seal(key: bytes, model_id: str, user_id: str, request_id: str, direction: str, plaintext: bytes,
         key_version: int = 1) -> Envelope:
    nonce = os.urandom(12)
    ct = AESGCM(message_key(key, model_id, user_id, request_id, direction, nonce)).encrypt(
        nonce, plaintext, aad(model_id, user_id, request_id, direction, key_version))
    return Envelope(model_id, user_id, request_id, nonce, ct, key_version)


def open_(key: bytes, env: Envelope, direction: str) -> bytes:
    try:
        return AESGCM(message_key(key, env.model_id, env.user_id, env.request_id, direction, env.nonce)).decrypt(
            env.nonce, env.ciphertext, aad(env.model_id, env.user_id, env.request_id, direction, env.key_version)
        )
    except InvalidTag as exc:
        raise IntegrityError(
            f"{'request' if direction == REQUEST else 'response'} does not authenticate "
            "(tampered, replayed into another context, or encrypted under another key)"
        ) from exc
