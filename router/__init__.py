"""The model packer's router (FnPacker): maps each model's requests to a pool
of packed actions through OpenWhisk's REST API. Runs outside enclaves and sees
ciphertext only. Imports `sesemi` and nothing else of this project."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["serve", "serve_front"]


def serve(config_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, threads: int = 64) -> None:
    """Serve the router with gunicorn (one worker, `threads` threads: claims and
    queues are shared in-process state). Config errors raise before binding."""
    from sesemi import logsafe
    from sesemi.gunicorn_serve import serve as gunicorn_serve
    from sesemi.openwhisk import OpenWhiskClient

    from . import config as config_mod
    from .app import create_app
    from .service import Router

    cfg = config_mod.load(config_path)
    creds = cfg.credentials()
    logsafe.configure("router")  # one line per record, control characters escaped
    if cfg.tls()["insecure"]:
        logging.getLogger("sesemi.router").warning(
            "INSECURE: openwhisk.insecure is set: the API host's TLS certificate is not verified")

    def factory():
        router = Router(cfg, OpenWhiskClient(creds, timeout=cfg.activation_timeout_s, pool_maxsize=threads,
                                             connect_timeout=cfg.connect_timeout_s, **cfg.tls()))
        logging.getLogger("sesemi.router").info(
            "router on %s:%d: %d pack(s), %d model(s), policy %s, OpenWhisk at %s", host, port, len(cfg.packs),
            len(router.pack_of), cfg.policy_kind, creds.apihost)
        return create_app(router)

    gunicorn_serve(factory, host=host, port=port, threads=threads, name="sesemi-router")


def serve_front(config_path: str | Path, *, host: str = "127.0.0.1", port: int = 8080, threads: int = 64,
                workers: int = 1) -> None:
    """Serve the front end for several routers. It keeps no shared state, so
    unlike the router it may run several worker processes. Config errors
    (including two routers claiming one model) raise before binding."""
    from sesemi.gunicorn_serve import serve as gunicorn_serve

    from . import front_config
    from .front import Front, create_app

    cfg = front_config.load(config_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s front %(levelname)s %(message)s")

    def factory():
        front = Front(cfg, pool_maxsize=threads)
        logging.getLogger("sesemi.router.front").info(
            "front end on %s:%d: %d router(s), %d model(s): %s", host, port, len(cfg.backends), len(front.routes),
            ", ".join(f"{b.name} at {b.url} ({len(b.models)} models, read bound {b.read_timeout_s:g} s)"
                      for b in cfg.backends))
        return create_app(front)

    gunicorn_serve(factory, host=host, port=port, threads=threads, name="sesemi-router-front", workers=workers)
