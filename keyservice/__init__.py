"""The SeSeMI key service: attestation verification, policy, sealed key storage."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .api import create_app
from .config import KeyServiceConfig
from .service import KeyService

__all__ = ["create_app", "KeyService", "KeyServiceConfig", "serve"]


def serve(db_path: str | Path, *, insecure_sim_attestation: bool = False, token_ttl_s: int = 600,
          host: str = "127.0.0.1", port: int = 8443, threads: int = 8) -> None:
    """Run the key service in ONE process with threads (Occlum has no fork)."""
    import waitress

    config = KeyServiceConfig(db_path=Path(db_path), insecure_sim_attestation=insecure_sim_attestation,
                              token_ttl_s=token_ttl_s)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keyservice %(levelname)s %(message)s")
    log = logging.getLogger("sesemi.keyservice")
    ks = KeyService(config)
    if ks.tee.simulated:
        log.warning("INSECURE SIMULATION: this key service attests itself with sim evidence "
                    "(not hardware-backed); its secrets file %s is protected by file mode only",
                    Path(config.secrets_path).name)
    if config.insecure_sim_attestation:
        log.warning("INSECURE: --insecure-sim-attestation is on: enclaves presenting SIMULATED "
                    "evidence will receive keys")
    ks.store.purge_expired(time.time())
    log.info("key service on %s:%d, mrenclave(sim)=%s, hpke key=%s", host, port, ks.mrenclave, ks.audience)
    waitress.serve(create_app(ks), host=host, port=port, threads=threads, ident="sesemi-keyservice",
                   _quiet=True)
