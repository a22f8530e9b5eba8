"""Principal identities: an Ed25519 key whose public half names the principal."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import FormatError, IntegrityError

PRINCIPAL_PREFIX = "p"
_PRINCIPAL_ID = re.compile(PRINCIPAL_PREFIX + "[0-9a-f]{40}")


def principal_id(public_raw: bytes) -> str:
    """The id is a digest of the public key, so nobody can claim another's id."""
    if len(public_raw) != 32:
        raise FormatError("public key: expected 32 bytes (Ed25519)")
    return PRINCIPAL_PREFIX + hashlib.sha256(b"sesemi/principal/v1" + public_raw).hexdigest()[:40]


def is_principal_id(text: str) -> bool:
    return isinstance(text, str) and _PRINCIPAL_ID.fullmatch(text) is not None


# The y-coordinates of Ed25519's eight small-order points (the 8-torsion: orders
# 1, 2, 4 and 8), as libsodium's blocklist has them; the sign bit does not
# matter. With such a public key, `R = that point, S = 0` verifies for every
# message under OpenSSL's cofactored check, so anyone could sign as it.
_P = 2**255 - 19
_SMALL_ORDER_Y = frozenset((
    0, 1, _P - 1,
    int.from_bytes(bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"),
    int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"),
))


def is_weak_point(encoded: bytes) -> bool:
    """True for a small-order point or a non-canonical encoding (y >= p)."""
    if len(encoded) != 32:
        return True
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)
    return y >= _P or y in _SMALL_ORDER_Y


def check_public_key(public_raw: bytes) -> bytes:
    """Registration's check: a 32-byte Ed25519 key that is not weak."""
    if len(public_raw) != 32:
        raise FormatError("public key: expected 32 bytes (Ed25519)")
    if is_weak_point(public_raw):
        raise FormatError("public key: a small-order or non-canonical Ed25519 point (refused: anyone could "
                          "sign as it)")
    return public_raw


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> None:
    if is_weak_point(public_raw) or len(signature) != 64 or is_weak_point(signature[:32]):
        raise IntegrityError("signature does not verify")
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError("signature does not verify") from exc


@dataclass(frozen=True)
class Identity:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> "Identity":
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def principal_id(self) -> str:
        return principal_id(self.public_raw)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def save(self, path: Path) -> None:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(path, pem)

    @classmethod
    def load(cls, name: str, path: Path) -> "Identity":
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # a mangled OID is UnsupportedAlgorithm
            raise FormatError(f"identity file {path} is not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise FormatError(f"identity file {path} does not hold an Ed25519 key")
        return cls(name, key)


def write_private_file(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
