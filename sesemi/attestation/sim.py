"""The `sim` TEE backend: SIMULATED evidence, not hardware-backed.

Evidence carries the same claims as an SGX quote, signed by a simulation key.
That key is derived from a public constant, so ANYONE can forge sim evidence:
it proves nothing about where code runs. It exists so the whole protocol
(nonces, REPORT_DATA binding, policies, key wrapping) runs and is tested on
machines without SGX. Verifiers accept it only behind an explicit insecure
flag, and every party that relies on it says so in its output.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..encoding import b64d, b64e, canonical_json, json_loads, JSONDecodeError
from ..errors import AttestationError, FormatError
from ..identity import verify_signature
from .claims import Claims

TYPE = "sim"
WARNING = "SIMULATED attestation: not hardware-backed, proves nothing about where code runs"
_SEED = hashlib.sha256(b"sesemi/sim-attestation-key/v1/INSECURE-PUBLIC-SEED").digest()
_KEY = Ed25519PrivateKey.from_private_bytes(_SEED)
SIM_PUBLIC = _KEY.public_key().public_bytes_raw()
SIM_MRSIGNER = hashlib.sha256(b"sesemi/sim-signer/v1").hexdigest()


class SimBackend:
    """Produces sim evidence for a measured piece of code."""

    name = TYPE
    simulated = True

    def __init__(self, mrenclave: str, mrsigner: str = SIM_MRSIGNER, isv_prod_id: int = 1,
                 isv_svn: int = 1, debug: bool = False) -> None:
        self.mrenclave = mrenclave
        self.mrsigner = mrsigner
        self.isv_prod_id = isv_prod_id
        self.isv_svn = isv_svn
        self.debug = debug

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        if len(report_data) != 64:
            raise ValueError("report_data must be 64 bytes")
        body = canonical_json({
            "mrenclave": self.mrenclave,
            "mrsigner": self.mrsigner,
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "report_data": report_data.hex(),
            "issued_at": int(time.time()),
        })
        return {"type": TYPE, "warning": WARNING, "body": b64e(body), "signature": b64e(_KEY.sign(body))}


def verify(evidence: dict[str, Any]) -> Claims:
    body = b64d(evidence.get("body"), "evidence.body")
    verify_signature(SIM_PUBLIC, b64d(evidence.get("signature"), "evidence.signature"), body)
    try:
        d = json_loads(body)
        return Claims(
            tee=TYPE,
            mrenclave=d["mrenclave"],
            mrsigner=d["mrsigner"],
            isv_prod_id=d["isv_prod_id"],
            isv_svn=d["isv_svn"],
            debug=d["debug"],
            report_data=d["report_data"],
        )  # Claims checks each value's type and range
    except (JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FormatError("sim evidence body has the wrong shape") from exc


__all__ = ["SimBackend", "verify", "TYPE", "WARNING", "SIM_MRSIGNER", "AttestationError"]
