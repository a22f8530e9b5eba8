"""The claims an attestation yields once its signature chain has been checked."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..encoding import lp


def report_data_binding(nonce: bytes, public_key: bytes) -> bytes:
    """64 bytes for REPORT_DATA: binds a verifier's fresh nonce to the key the
    enclave wants secrets wrapped to, so evidence cannot be replayed and keys
    cannot be redirected to a key the enclave does not hold."""
    return hashlib.sha512(lp("sesemi/report-data/v1", nonce, public_key)).digest()


@dataclass(frozen=True)
class Claims:
    tee: str                      # "sim" or "sgx"
    mrenclave: str                # hex
    mrsigner: str                 # hex
    isv_prod_id: int
    isv_svn: int
    debug: bool
    report_data: str              # hex, 64 bytes
    tcb_status: str | None = None  # DCAP only
    advisory_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def simulated(self) -> bool:
        return self.tee == "sim"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["advisory_ids"] = list(self.advisory_ids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Claims":
        d = dict(d)
        # Required: a missing list must not read as "no advisories".
        d["advisory_ids"] = tuple(d["advisory_ids"])
        return cls(**d)
