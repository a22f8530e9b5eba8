"""SeMIRT: the inference action (OpenWhisk blackbox protocol) for SeSeMI."""

from __future__ import annotations

import logging
from typing import Callable, Mapping

from sesemi import hpke_box, logsafe
from sesemi.attestation.backends import check_available

from .config import ActionConfig
from .server import ActionHTTPServer, ActionService, create_server

__all__ = ["ActionConfig", "ActionService", "create_server", "serve"]


def serve(settings: Mapping[str, str], host: str = "127.0.0.1", port: int = 8080, threads: int = 64,
          init_now: bool = False, make_server: Callable[..., ActionHTTPServer] = create_server) -> None:
    """Serve /init and /run in ONE process, a thread per connection (Occlum has no fork).

    `settings` uses the environment names (SESEMI_PACK, ...) and overrides the
    process environment; /init's value.env overrides both. `threads` caps the
    concurrent connections (the platform's concurrency limit sets how many it opens).
    `make_server`: the HTTP layer (bench/flask_action.py measures another one)."""
    hpke_box.check_backend()  # released keys arrive in hybrid HPKE boxes: one line if ML-KEM is missing
    logsafe.configure("action")  # one line per record, control characters escaped
    log = logging.getLogger("sesemi.action")
    from .malloc_tuning import tune_malloc

    tune_malloc()
    config = ActionConfig.from_environ().with_env(settings)
    check_available(config.tee)  # before listening: a platform should see the start fail, not /init
    server = make_server(config, host, port, max_connections=threads)
    if config.tee == "sim":
        log.warning("INSECURE SIMULATION: tee=sim; evidence is not hardware-backed and every "
                    "response is labelled insecure_simulation=true")
    if init_now:
        rt = server.service.initialise({})
        log.info("initialised at start-up in %.3fs", rt.init_seconds)
    log.info("action listening on %s:%d (up to %d connections)", host, port, threads)
    try:
        server.serve_forever()
    finally:
        server.server_close()
