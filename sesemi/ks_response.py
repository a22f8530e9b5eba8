"""Signed key-service responses.

HPKE base mode authenticates nobody, and an `X-Sesemi-KS-Key` header is
public: without more, a proxy between a client (or an enclave) and the key
service could fake a `revoke`, or hand an enclave keys of its own making, or
replay an old key release after a revocation. So the key service signs every
response with an Ed25519 key that its attestation binds (REPORT_DATA covers
its HPKE key and this key), over the caller's fresh nonce, the method, the
request target as received, a hash of the request body, the status and the
body. The request hash binds the answer to the request it answers: a proxy
that rewrites a request (say the `user_id` of a key release) gets an answer
the caller refuses. Clients pin the key with `sesemi ks attest`;
actions pin it in their measured configuration (SESEMI_KS_KEY).

The signature also covers the service's signed checkpoint of its log and the
consistency proof from the tree size the caller said it holds (sesemi/ks_log.py,
sesemi/ks_state.py), so every answer proves that the state behind it extends
what the caller has seen: a rolled-back or forked database cannot.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from . import hpke_box
from .encoding import b64d, b64e, lp
from .errors import FormatError, IntegrityError
from .identity import verify_signature

if TYPE_CHECKING:  # the verifier is passed in: this module stays light for the key service
    from .attestation import Claims, EvidenceVerifier

H_SIGNATURE = "X-Sesemi-Response-Signature"
H_NONCE = "X-Sesemi-Nonce"  # the caller's fresh nonce (signed calls already send one)


def identity(hpke_public: bytes, signing_public: bytes) -> bytes:
    """What the key service's REPORT_DATA binds: its HPKE key's suite and both
    of its public keys (hybrid: 1,216 + 32 bytes)."""
    return lp("sesemi/ks-identity/v2", hpke_box.kem_of_public(hpke_public, allow_classical=True).suite_name,
              hpke_public, signing_public)


def message(nonce: str, method: str, target: str, request_body: bytes, status: int, body: bytes,
            note: str = "", proof_from: str = "", proof: str = "") -> bytes:
    return lp("sesemi/ks-response/v4", nonce, method.upper(), target, hashlib.sha256(request_body).digest(),
              str(status), hashlib.sha256(body).digest(), note, proof_from, proof)


def sign(signer, nonce: str, method: str, target: str, request_body: bytes, status: int, body: bytes,
         note: str = "", proof_from: str = "", proof: str = "") -> str:
    return b64e(signer.sign(message(nonce, method, target, request_body, status, body, note, proof_from, proof)))


def verify(signing_public: bytes, signature: str | None, nonce: str, method: str, target: str,
           request_body: bytes, status: int, body: bytes, note: str = "", proof_from: str = "",
           proof: str = "") -> None:
    if not signature:
        raise IntegrityError("key-service response is not signed (not the pinned key service)")
    try:
        verify_signature(signing_public, b64d(signature, "response signature"),
                         message(nonce, method, target, request_body, status, body, note, proof_from, proof))
    except (IntegrityError, FormatError):
        raise IntegrityError("key-service response signature does not verify: not from the pinned key "
                             "service, altered, or replayed") from None


def verify_attestation(body: Any, nonce: bytes, verifier: EvidenceVerifier,
                       what: str) -> tuple[Claims, bytes, bytes]:
    """A key service's `/v1/attestation` answer: its evidence must bind our nonce
    and both of its public keys, and its HPKE key must be hybrid (an X25519-only
    key is a downgrade: refused). Returns (claims, HPKE key, signing key)."""
    if not isinstance(body, dict):
        raise FormatError(f"{what}: expected a JSON object")
    pub = b64d(body.get("hpke_public_key"), "hpke_public_key")
    sig_pub = b64d(body.get("signing_public_key"), "signing_public_key")
    if len(sig_pub) != 32:
        raise FormatError(f"{what}: the signing key must be 32 bytes (Ed25519)")
    try:
        hpke_box.kem_of_public(pub)
    except (FormatError, IntegrityError) as exc:
        raise type(exc)(f"{what}: {exc}") from None
    claims = verifier.verify(body.get("evidence"), nonce=nonce, public_key=identity(pub, sig_pub))
    return claims, pub, sig_pub
