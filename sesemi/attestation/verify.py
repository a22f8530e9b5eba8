"""Evidence verification: dispatch on the evidence type, return Claims.

Three separate steps, each testable on its own:
1. `EvidenceVerifier.claims(evidence)`: the signature chain -> Claims;
2. `check_binding(claims, nonce, public_key)`: REPORT_DATA binds this
   verifier's fresh nonce and the key secrets will be wrapped to;
3. `EnclavePolicy.check(claims)` (sesemi.policy): which enclaves are welcome.
Steps 1-2 are `EvidenceVerifier.verify`; step 3 is per model, elsewhere.
"""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import AttestationError, FormatError, IntegrityError
from . import dcap, sim
from .claims import Claims, report_data_binding


def check_binding(claims: Claims, nonce: bytes, public_key: bytes) -> None:
    expected = report_data_binding(nonce, public_key).hex()
    # Compared as bytes: compare_digest refuses non-ASCII str, and evidence is untrusted input.
    if not hmac.compare_digest(claims.report_data.lower().encode(), expected.encode()):
        raise AttestationError("report_data does not bind this nonce and public key", check="report_data")


class EvidenceVerifier:
    """Knows which evidence types this party accepts: sim only behind the
    insecure flag, sgx-dcap only with a collateral source configured."""

    def __init__(self, *, allow_sim: bool = False, dcap_verifier: dcap.DcapVerifier | None = None) -> None:
        self.allow_sim = allow_sim
        self.dcap = dcap_verifier

    @property
    def accepts_dcap(self) -> bool:
        return self.dcap is not None

    def claims(self, evidence: Any) -> Claims:
        if not isinstance(evidence, dict) or not isinstance(evidence.get("type"), str):
            raise FormatError("evidence: expected an object with a 'type'")
        kind = evidence["type"]
        if kind == sim.TYPE:
            if not self.allow_sim:
                raise AttestationError(
                    "sim evidence refused: this verifier was not started with an insecure "
                    "simulation flag (--insecure-sim-attestation / --insecure-sim)", check="sim_not_allowed")
            try:
                return sim.verify(evidence)
            except IntegrityError as exc:
                raise AttestationError("sim evidence signature does not verify", check="sim_signature") from exc
        if kind == dcap.TYPE:
            if self.dcap is None:
                raise AttestationError(
                    "sgx-dcap evidence refused: this verifier has no DCAP collateral source "
                    "(configure --pccs-url or --collateral-file)", check="collateral")
            return self.dcap.verify(evidence)
        raise AttestationError(f"evidence type {kind!r} is not supported by this verifier", check="evidence_type")

    def verify(self, evidence: Any, *, nonce: bytes, public_key: bytes) -> Claims:
        claims = self.claims(evidence)
        check_binding(claims, nonce, public_key)
        return claims


def verify_evidence(evidence: Any, *, nonce: bytes, public_key: bytes, allow_sim: bool,
                    dcap_verifier: dcap.DcapVerifier | None = None) -> Claims:
    """Check the evidence's signature chain and its REPORT_DATA binding.

    Policy (which measurements are acceptable) is judged separately, by
    `sesemi.policy`, so both evidence kinds share one policy path.
    """
    verifier = EvidenceVerifier(allow_sim=allow_sim, dcap_verifier=dcap_verifier)
    return verifier.verify(evidence, nonce=nonce, public_key=public_key)
