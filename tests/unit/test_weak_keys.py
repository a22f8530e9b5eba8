"""Small-order Ed25519 keys are refused at registration and in verification."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyservice import KeyService, KeyServiceConfig
from sesemi.errors import FormatError, IntegrityError
from sesemi.identity import Identity, verify_signature

P = 2**255 - 19
IDENTITY_POINT = (1).to_bytes(32, "little")
FORGED = IDENTITY_POINT + bytes(32)  # R = identity, S = 0


def _weak_keys() -> list[bytes]:
    ys = [0, 1, P - 1, P, P + 1,
          int("05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826", 16),
          int("7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7", 16)]
    return [y.to_bytes(32, "little") for y in ys] + [
        (y | (1 << 255)).to_bytes(32, "little") for y in ys if y < P]


def test_the_forgery_works_without_the_check():
    """The premise: OpenSSL accepts it, so the refusal must be ours."""
    Ed25519PublicKey.from_public_bytes(IDENTITY_POINT).verify(FORGED, b"any message")


@pytest.mark.parametrize("key", _weak_keys())
def test_weak_public_keys_refused_in_verification(key):
    with pytest.raises(IntegrityError):
        verify_signature(key, FORGED, b"grant me")


def test_small_order_r_refused_and_good_signatures_pass():
    ident = Identity.generate("a")
    verify_signature(ident.public_raw, ident.sign(b"m"), b"m")
    with pytest.raises(IntegrityError):
        verify_signature(ident.public_raw, IDENTITY_POINT + ident.sign(b"m")[32:], b"m")


def test_registration_refuses_a_small_order_key(tmp_path):
    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db"))
    with pytest.raises(FormatError, match="small-order"):
        ks.register_principal(IDENTITY_POINT)
