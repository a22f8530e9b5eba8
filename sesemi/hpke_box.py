"""HPKE (RFC 9180) base mode boxes: hybrid post-quantum by default.

Every secret sent to the key service and every key it releases travels in one
of these boxes. The default suite is MLKEM768-X25519 (X-Wing, KEM id 0x647A,
draft-ietf-hpke-pq) / HKDF-SHA256 / AES-256-GCM: a recorded box stays closed
unless both ML-KEM-768 and X25519 are broken ("harvest now, decrypt later").
X25519 alone (DHKEM(X25519), KEM id 0x0020) is refused unless a caller
explicitly allows it (the key service's `--insecure-allow-classical-kem`).

Box format v2 (docs/protocol.md, "Key transport"):
    0x02 || KEM id (2 bytes, big-endian) || enc || AEAD ciphertext
The header names the suite; the HPKE `info` binds the format, the suite's name,
the purpose and the context, so a box made for one (suite, model, user,
purpose) does not open as another, and a box cannot be re-labelled with
another suite. Format v1 (X25519, no header) is no longer produced or opened.

Keys. A hybrid public key is the ML-KEM-768 encapsulation key (1,184 bytes)
followed by the X25519 key (32 bytes): 1,216 bytes, X-Wing's order. A hybrid
private key is stored as the ML-KEM-768 seed (64 bytes, d || z) followed by
the X25519 private key (32 bytes).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .encoding import lp
from .errors import FormatError, IntegrityError, SesemiError

FORMAT_VERSION = 2
HYBRID = "MLKEM768-X25519"
CLASSICAL = "X25519"
SUITE_NAME = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"  # the default, as announced by the key service


@dataclass(frozen=True)
class Kem:
    name: str          # HYBRID or CLASSICAL
    suite_name: str    # the full HPKE suite
    kem_id: int        # RFC 9180 / draft-ietf-hpke-pq KEM identifier
    public_len: int
    private_len: int
    enc_len: int

    @property
    def suite(self) -> hpke.Suite:
        return hpke.Suite(getattr(hpke.KEM, "MLKEM768_X25519" if self.name == HYBRID else "X25519"),
                          hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


KEMS = {
    HYBRID: Kem(HYBRID, SUITE_NAME, 0x647A, 1184 + 32, 64 + 32, 1088 + 32),
    CLASSICAL: Kem(CLASSICAL, "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM", 0x0020, 32, 32, 32),
}
_BY_ID = {k.kem_id: k for k in KEMS.values()}
_BY_PUBLIC_LEN = {k.public_len: k for k in KEMS.values()}
try:  # built once; a cryptography without the hybrid KEM is reported by check_backend()
    _SUITES = {name: k.suite for name, k in KEMS.items()}
except AttributeError:
    _SUITES = {}


class Downgrade(IntegrityError):
    """A key or box of the classical suite where the hybrid one is required."""


def _refuse_classical(what: str) -> Downgrade:
    return Downgrade(f"{what} uses X25519 alone ({KEMS[CLASSICAL].suite_name}): refused, "
                     f"{HYBRID} (hybrid post-quantum) is required (a key service accepts it only with "
                     "--insecure-allow-classical-kem)")


def check_backend() -> None:
    """Start-up check for every process that seals or opens a box: the
    OpenSSL (or AWS-LC) behind `cryptography` must provide ML-KEM-768, X25519
    and the hybrid HPKE KEM. Raises SesemiError naming what is missing."""
    from cryptography.hazmat.backends.openssl.backend import backend

    if not _SUITES or not hasattr(hpke, "MLKEM768X25519PrivateKey"):
        raise SesemiError("this cryptography package lacks HPKE's MLKEM768-X25519 KEM (needs cryptography >= 47)")
    if not backend.mlkem_supported():
        raise SesemiError(f"the crypto library ({backend.openssl_version_text()}) lacks ML-KEM-768, which "
                          f"the {HYBRID} HPKE suite needs: install OpenSSL >= 3.5 or AWS-LC")
    if not backend.x25519_supported():
        raise SesemiError(f"the crypto library ({backend.openssl_version_text()}) lacks X25519")
    try:
        key = new_private_key(HYBRID)
        open_(seal(b"\0" * 32, key.public, b"check"), key, b"check")
    except (UnsupportedAlgorithm, SesemiError) as exc:
        raise SesemiError(f"the {SUITE_NAME} HPKE suite does not work with "
                          f"{backend.openssl_version_text()}: {exc}") from None


def info(purpose: str, *context: str) -> bytes:
    return lp(purpose, *context)


def _full_info(kem: Kem, info_bytes: bytes) -> bytes:
    return lp(f"sesemi/hpke/v{FORMAT_VERSION}", kem.suite_name, info_bytes)


@dataclass(frozen=True)
class PrivateKey:
    kem: Kem
    raw: bytes        # the stored form (see the module docstring)
    public: bytes     # the raw public key
    _hpke: object     # what hpke.Suite.decrypt takes
    _x25519: X25519PrivateKey

    def __repr__(self) -> str:  # never the key
        return f"hpke_box.PrivateKey({self.kem.name})"


def _mlkem():
    from cryptography.hazmat.primitives.asymmetric import mlkem
    return mlkem


def new_private_key(kem: str = HYBRID) -> PrivateKey:
    if kem == CLASSICAL:
        return load_private(X25519PrivateKey.generate().private_bytes_raw())
    seed = _mlkem().MLKEM768PrivateKey.generate().private_bytes_raw()
    return load_private(seed + X25519PrivateKey.generate().private_bytes_raw())


def public_raw(key: PrivateKey) -> bytes:
    return key.public


def private_raw(key: PrivateKey) -> bytes:
    return key.raw


def load_private(raw: bytes) -> PrivateKey:
    if len(raw) == KEMS[HYBRID].private_len:
        m = _mlkem().MLKEM768PrivateKey.from_seed_bytes(raw[:64])
        x = X25519PrivateKey.from_private_bytes(raw[64:])
        return PrivateKey(KEMS[HYBRID], bytes(raw), m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw(),
                          hpke.MLKEM768X25519PrivateKey(m, x), x)
    if len(raw) == KEMS[CLASSICAL].private_len:
        x = X25519PrivateKey.from_private_bytes(raw)
        return PrivateKey(KEMS[CLASSICAL], bytes(raw), x.public_key().public_bytes_raw(), x, x)
    raise FormatError(f"HPKE private key: expected {KEMS[HYBRID].private_len} bytes ({HYBRID})")


def kem_of_public(raw: bytes, allow_classical: bool = False) -> Kem:
    """The suite a raw public key belongs to (by its length), refusing X25519
    alone unless allowed."""
    kem = _BY_PUBLIC_LEN.get(len(raw))
    if kem is None:
        raise FormatError(f"HPKE public key: expected {KEMS[HYBRID].public_len} bytes ({HYBRID})")
    if kem.name == CLASSICAL and not allow_classical:
        raise _refuse_classical("HPKE public key")
    return kem


def load_public(raw: bytes, allow_classical: bool = False):
    """The key object hpke.Suite.encrypt takes; FormatError if malformed."""
    return _public_object(bytes(raw), kem_of_public(raw, allow_classical))


@functools.lru_cache(maxsize=1024)  # a release seals twice to one enclave key, and again every key TTL
def _public_object(raw: bytes, kem: Kem):
    try:
        if kem.name == CLASSICAL:
            return X25519PublicKey.from_public_bytes(raw)
        m = _mlkem().MLKEM768PublicKey.from_public_bytes(raw[:1184])
        return hpke.MLKEM768X25519PublicKey(m, X25519PublicKey.from_public_bytes(raw[1184:]))
    except ValueError:
        raise FormatError(f"HPKE public key: not a valid {kem.name} key") from None


def key_id(raw: bytes) -> str:
    """A short name for a public key (hex SHA-256 over its suite and bytes): the
    key service's audience and `X-Sesemi-KS-Key`, which a pin compares."""
    return hashlib.sha256(lp("sesemi/hpke-key/v1", _BY_PUBLIC_LEN.get(len(raw), KEMS[HYBRID]).name, raw)).hexdigest()


def seal(plaintext: bytes, recipient_public: bytes, info_bytes: bytes, allow_classical: bool = False) -> bytes:
    """Encrypt to a raw public key; returns the v2 box (header || enc || ciphertext)."""
    kem = kem_of_public(recipient_public, allow_classical)
    try:
        body = _SUITES[kem.name].encrypt(plaintext, load_public(recipient_public, allow_classical),
                                          info=_full_info(kem, info_bytes))
    except ValueError:  # a low-order X25519 point (e.g. all zeros): no shared key
        raise FormatError(f"HPKE public key: not a usable {kem.name} key (low-order X25519 point)") from None
    return bytes([FORMAT_VERSION]) + kem.kem_id.to_bytes(2, "big") + body


def box_kem(box: bytes) -> Kem:
    """The suite a box names in its header; refuses unknown formats."""
    if len(box) < 3 or box[0] != FORMAT_VERSION:
        raise IntegrityError(f"HPKE box: not format v{FORMAT_VERSION} (format v1, X25519 alone without a "
                             "suite header, is no longer accepted)")
    kem = _BY_ID.get(int.from_bytes(box[1:3], "big"))
    if kem is None:
        raise IntegrityError(f"HPKE box: unknown KEM id 0x{box[1:3].hex()} (expected 0x647a, {HYBRID})")
    return kem


def open_(box: bytes, recipient: PrivateKey, info_bytes: bytes, allow_classical: bool = False) -> bytes:
    """Open a v2 box. A hybrid recipient opens a classical box only when
    allowed, with the X25519 half of its key (--insecure-allow-classical-kem)."""
    kem = box_kem(box)
    if kem.name == CLASSICAL and not allow_classical:
        raise _refuse_classical("HPKE box")
    if kem.name == HYBRID and recipient.kem.name != HYBRID:
        raise IntegrityError("HPKE box is hybrid but this recipient holds an X25519 key only")
    key = recipient._hpke if kem.name == recipient.kem.name else recipient._x25519
    try:
        return _SUITES[kem.name].decrypt(box[3:], key, info=_full_info(kem, info_bytes))
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError("HPKE box does not open (wrong recipient or context, or tampered)") from exc
