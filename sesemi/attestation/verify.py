"""Evidence verification: dispatch on the evidence type, return Claims."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import AttestationError, FormatError, IntegrityError
from . import sim
from .claims import Claims, report_data_binding


def verify_evidence(evidence: Any, *, nonce: bytes, public_key: bytes, allow_sim: bool) -> Claims:
    """Check the evidence's signature chain and its REPORT_DATA binding.

    Policy (which measurements are acceptable) is judged separately, by
    `sesemi.policy`, so both evidence kinds share one policy path.
    """
    if not isinstance(evidence, dict) or not isinstance(evidence.get("type"), str):
        raise FormatError("evidence: expected an object with a 'type'")
    kind = evidence["type"]
    if kind == sim.TYPE:
        if not allow_sim:
            raise AttestationError(
                "sim evidence refused: this verifier was not started with an insecure "
                "simulation flag (--insecure-sim-attestation / --insecure-sim)"
            )
        try:
            claims = sim.verify(evidence)
        except IntegrityError as exc:
            raise AttestationError("sim evidence signature does not verify") from exc
    else:
        raise AttestationError(f"evidence type {kind!r} is not supported by this verifier")
    expected = report_data_binding(nonce, public_key).hex()
    if not hmac.compare_digest(claims.report_data, expected):
        raise AttestationError("report_data does not bind this nonce and public key")
    return claims
