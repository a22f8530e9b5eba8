"""The claims an attestation yields once its signature chain has been checked."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..encoding import lp
from ..errors import FormatError

_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{128}")
_U16 = 0xFFFF  # SGX's ISVPRODID and ISVSVN are 16-bit


def report_data_binding(nonce: bytes, public_key: bytes) -> bytes:
    """64 bytes for REPORT_DATA: binds a verifier's fresh nonce to the key the
    enclave wants secrets wrapped to, so evidence cannot be replayed and keys
    cannot be redirected to a key the enclave does not hold. REPORT_DATA holds
    64 bytes and a hybrid HPKE key 1,216: a SHA-256 of the whole key is bound
    (its length, hence its suite, included)."""
    return hashlib.sha512(lp("sesemi/report-data/v2", nonce, hashlib.sha256(public_key).digest())).digest()


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

    def __post_init__(self) -> None:
        """Every claim has a range, checked here where claims are made: values
        beyond it (an isv_svn of 2**64 from forged sim evidence) would otherwise
        reach the store and the policies."""
        if self.tee not in ("sim", "sgx"):
            raise FormatError("claims: tee must be 'sim' or 'sgx'")
        for name in ("mrenclave", "mrsigner"):
            if not isinstance(getattr(self, name), str) or not _HEX32.fullmatch(getattr(self, name)):
                raise FormatError(f"claims: {name} must be 32 bytes of lowercase hex")
        for name in ("isv_prod_id", "isv_svn"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _U16:
                raise FormatError(f"claims: {name} must be an integer in 0..{_U16}")
        if type(self.debug) is not bool:
            raise FormatError("claims: debug must be true or false")
        if not isinstance(self.report_data, str) or not _HEX64.fullmatch(self.report_data):
            raise FormatError("claims: report_data must be 64 bytes of lowercase hex")
        if self.tcb_status is not None and (not isinstance(self.tcb_status, str) or len(self.tcb_status) > 64):
            raise FormatError("claims: tcb_status must be a short string")
        if len(self.advisory_ids) > 256 or not all(isinstance(a, str) and len(a) <= 64 for a in self.advisory_ids):
            raise FormatError("claims: advisory_ids must be at most 256 short strings")

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
