"""Principal identities: an Ed25519 key whose public half names the principal."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
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


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> None:
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
        except (ValueError, TypeError) as exc:
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
