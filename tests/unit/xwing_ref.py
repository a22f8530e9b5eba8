"""A second implementation of HPKE with the MLKEM768-X25519 KEM (X-Wing), the
tests' own, to check `cryptography`'s against: built from its separate
ML-KEM-768 and X25519 primitives, SHA3-256/SHAKE256 from hashlib and the
RFC 9180 key schedule written out here.

Sources (read, not copied): draft-connolly-cfrg-xwing-kem (key expansion,
combiner, encapsulation, decapsulation), draft-ietf-hpke-pq (X-Wing as an HPKE
KEM, id 0x647A, its shared secret used directly) and RFC 9180 section 5.1
(base mode key schedule) and 5.2 (single-shot AEAD, sequence number 0).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEM_ID, KDF_ID, AEAD_ID = 0x647A, 0x0001, 0x0002  # X-Wing, HKDF-SHA256, AES-256-GCM
XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")  # "\./" "/^\"
SUITE_ID = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
NK, NN = 32, 12


# --- X-Wing ---------------------------------------------------------------------------------------

def expand(seed: bytes) -> tuple[MLKEM768PrivateKey, X25519PrivateKey]:
    """The X-Wing decapsulation key (32 bytes) expanded with SHAKE256 to the
    ML-KEM-768 seed d || z (64 bytes) and the X25519 private key (32 bytes)."""
    assert len(seed) == 32
    wide = hashlib.shake_256(seed).digest(96)
    return MLKEM768PrivateKey.from_seed_bytes(wide[:64]), X25519PrivateKey.from_private_bytes(wide[64:])


def public_of(sk_m: MLKEM768PrivateKey, sk_x: X25519PrivateKey) -> bytes:
    return sk_m.public_key().public_bytes_raw() + sk_x.public_key().public_bytes_raw()


def combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def encapsulate(pk: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext ct_M || ct_X) for a 1,216-byte X-Wing key."""
    assert len(pk) == 1216
    pk_m, pk_x = pk[:1184], pk[1184:]
    ek_x = X25519PrivateKey.generate()
    ct_x = ek_x.public_key().public_bytes_raw()
    ss_x = ek_x.exchange(X25519PublicKey.from_public_bytes(pk_x))
    ss_m, ct_m = MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    return combiner(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def decapsulate(ct: bytes, sk_m: MLKEM768PrivateKey, sk_x: X25519PrivateKey) -> bytes:
    assert len(ct) == 1120
    ct_m, ct_x = ct[:1088], ct[1088:]
    ss_m = sk_m.decapsulate(ct_m)
    ss_x = sk_x.exchange(X25519PublicKey.from_public_bytes(ct_x))
    return combiner(ss_m, ss_x, ct_x, sk_x.public_key().public_bytes_raw())


# --- RFC 9180 base mode -------------------------------------------------------------------------

def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + SUITE_ID + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + SUITE_ID + label + info, length)


def key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """Mode base (0x00), no PSK: (AEAD key, base nonce)."""
    context = (b"\x00" + _labeled_extract(b"", b"psk_id_hash", b"")
               + _labeled_extract(b"", b"info_hash", info))
    secret = _labeled_extract(shared_secret, b"secret", b"")
    return _labeled_expand(secret, b"key", context, NK), _labeled_expand(secret, b"base_nonce", context, NN)


def seal(pk: bytes, info: bytes, plaintext: bytes) -> bytes:
    """Single-shot: enc || AEAD ciphertext (sequence number 0: the base nonce)."""
    ss, enc = encapsulate(pk)
    key, nonce = key_schedule(ss, info)
    return enc + AESGCM(key).encrypt(nonce, plaintext, b"")


def open_(sk_m: MLKEM768PrivateKey, sk_x: X25519PrivateKey, info: bytes, box: bytes) -> bytes:
    key, nonce = key_schedule(decapsulate(box[:1120], sk_m, sk_x), info)
    return AESGCM(key).decrypt(nonce, box[1120:], b"")
