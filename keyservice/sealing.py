"""The key service's own secrets: its HPKE key pair and the storage key that
encrypts key material at rest.

The HPKE key is hybrid (MLKEM768-X25519, sesemi/hpke_box.py). A secrets file
from before the hybrid suite holds a 32-byte X25519 key: it is replaced by a
new hybrid key at load, and the storage and signing keys are kept, so every
stored key still decrypts (docs/protocol.md, "Migration").

They live in a file next to the database. Inside Occlum both sit on a SEFS
mount sealed to MRSIGNER, so only enclaves of the same signer can read them.
In a plain process (sim) that file is protected by its 0600 mode only, which
the service says at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sesemi import hpke_box
from sesemi.encoding import b64d, b64e, canonical_json, json_loads, lp
from sesemi.errors import IntegrityError
from sesemi.identity import write_private_file


@dataclass
class ServiceSecrets:
    storage_key: bytes
    hpke_private: bytes
    signing_private: bytes  # Ed25519: signs every response (sesemi/ks_response.py)
    kem_upgraded: bool = False  # this load replaced an X25519-only key with a hybrid one
    # This identity has started a log: it never again adopts a database without
    # one (a host could build such a database with rows of its own choosing).
    # New identities start with it set; a secrets file from before the log, without.
    log_started: bool = True

    @property
    def hpke_public(self) -> bytes:
        return hpke_box.public_raw(hpke_box.load_private(self.hpke_private))

    @property
    def signer(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.signing_private)

    @property
    def signing_public(self) -> bytes:
        return self.signer.public_key().public_bytes_raw()

    @classmethod
    def load_or_create(cls, path: Path) -> "ServiceSecrets":
        if path.exists():
            d = json_loads(path.read_bytes())
            hpke_private = b64d(d["hpke_private"])
            upgrade = hpke_box.load_private(hpke_private).kem.name != hpke_box.HYBRID
            started = d.get("log_started") is True
            if "signing_private" in d and not upgrade:
                return cls(b64d(d["storage_key"]), hpke_private, b64d(d["signing_private"]), log_started=started)
            # An older secrets file: keep its storage key (and signing key, if any); a
            # hybrid HPKE key replaces an X25519 one, a signing key is added if missing.
            if upgrade:
                hpke_private = hpke_box.private_raw(hpke_box.new_private_key())
            s = cls(b64d(d["storage_key"]), hpke_private,
                    b64d(d["signing_private"]) if "signing_private" in d else os.urandom(32), upgrade,
                    log_started=started)
        else:
            s = cls(AESGCM.generate_key(bit_length=256), hpke_box.private_raw(hpke_box.new_private_key()),
                    os.urandom(32))
        s.save(path)
        return s

    def save(self, path: Path) -> None:
        fields = {"storage_key": b64e(self.storage_key), "hpke_private": b64e(self.hpke_private),
                  "signing_private": b64e(self.signing_private)}
        write_private_file(path, canonical_json({**fields, **({"log_started": True} if self.log_started else {})}))

    def encrypt_at_rest(self, key: bytes, *context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self.storage_key).encrypt(nonce, key, lp("sesemi/ks-at-rest/v1", *context))

    def decrypt_at_rest(self, blob: bytes, *context: str) -> bytes:
        try:
            return AESGCM(self.storage_key).decrypt(blob[:12], blob[12:], lp("sesemi/ks-at-rest/v1", *context))
        except InvalidTag as exc:
            raise IntegrityError("stored key does not authenticate (database tampered)") from exc
