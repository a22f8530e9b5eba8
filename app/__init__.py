"""SeMIRT: the inference action (OpenWhisk blackbox protocol) for SeSeMI."""

from __future__ import annotations

import logging
from typing import Mapping

from .config import ActionConfig
from .server import create_app, initialise

__all__ = ["ActionConfig", "create_app", "serve"]


def serve(settings: Mapping[str, str], host: str = "127.0.0.1", port: int = 8080, threads: int = 8,
          init_now: bool = False) -> None:
    """Serve /init and /run in ONE process with a thread pool (Occlum has no fork).

    `settings` uses the environment names (SESEMI_PACK, ...) and overrides the
    process environment; /init's value.env overrides both."""
    import waitress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s action %(levelname)s %(message)s")
    log = logging.getLogger("sesemi.action")
    config = ActionConfig.from_environ().with_env(settings)
    app = create_app(config)
    if config.tee == "sim":
        log.warning("INSECURE SIMULATION: tee=sim; evidence is not hardware-backed and every "
                    "response is labelled insecure_simulation=true")
    if init_now:
        rt = initialise(app)
        log.info("initialised at start-up in %.3fs", rt.init_seconds)
    log.info("action listening on %s:%d with %d threads", host, port, threads)
    waitress.serve(app, host=host, port=port, threads=threads, ident="sesemi-action", _quiet=True,
                   channel_timeout=300)
