from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyServiceConfig:
    db_path: Path
    insecure_sim_attestation: bool = False
    tee: str = "sim"                 # how the service attests ITSELF
    # Where DCAP collateral comes from (file wins); neither: sgx-dcap evidence is refused.
    pccs_url: str | None = None
    collateral_file: Path | None = None
    min_tcb_eval: int = 0            # refuse collateral with a lower tcbEvaluationDataNumber
    token_ttl_s: int = 600           # enclave attestation tokens
    nonce_ttl_s: int = 60            # attestation nonces: single use, short-lived
    max_body_bytes: int = 1 << 20

    @property
    def secrets_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".secrets")

    def trusted(self) -> dict:
        """The settings that change what the service releases: measured in sim."""
        return {"insecure_sim_attestation": self.insecure_sim_attestation,
                "token_ttl_s": self.token_ttl_s, "nonce_ttl_s": self.nonce_ttl_s,
                "min_tcb_eval": self.min_tcb_eval}
