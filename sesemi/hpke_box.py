"""HPKE (RFC 9180) base mode, X25519 / HKDF-SHA256 / AES-256-GCM.

Every secret sent to the key service and every key it releases travels in one
of these boxes. The `info` string binds the box to its purpose and context, so
a box made for one (model, user, purpose) does not open as another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from .encoding import lp
from .errors import FormatError, IntegrityError

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"


def info(purpose: str, *context: str) -> bytes:
    return lp("sesemi/hpke/v1", purpose, *context)


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_raw(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != 32:
        raise FormatError("HPKE private key: expected 32 bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def load_public(raw: bytes) -> X25519PublicKey:
    if len(raw) != 32:
        raise FormatError("HPKE public key: expected 32 bytes (X25519)")
    return X25519PublicKey.from_public_bytes(raw)


def seal(plaintext: bytes, recipient_public: bytes, info_bytes: bytes) -> bytes:
    """Encrypt to a raw X25519 public key; returns enc || ciphertext."""
    try:
        return SUITE.encrypt(plaintext, load_public(recipient_public), info=info_bytes)
    except ValueError:  # a low-order point (e.g. all zeros): the X25519 exchange gives no shared key
        raise FormatError("HPKE public key: not a usable X25519 key (low-order point)") from None


def open_(box: bytes, recipient: X25519PrivateKey, info_bytes: bytes) -> bytes:
    try:
        return SUITE.decrypt(box, recipient, info=info_bytes)
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError("HPKE box does not open (wrong recipient or context)") from exc
