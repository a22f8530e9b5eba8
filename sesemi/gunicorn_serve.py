"""Serve a WSGI app with gunicorn, for the components that run outside
enclaves (the router, the local platform emulator). Inside an enclave there is
no fork, so the action and the key service do not use this (docs/architecture.md §5, Platform).

One worker process with threads: the router's claims and queue, and the
emulator's containers, are in-memory state that must be shared by all
requests, so they cannot be split across prefork workers (the routers' front
end, which has no such state, may take several).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from .encoding import json_dumps
from .errors import UnavailableError


def json_write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answer to a request it cannot parse (a bad request line
    or header, before any app code runs), as the JSON error body every other
    layer gives instead of gunicorn's HTML page. Same signature as
    gunicorn.util.write_error, which gunicorn's workers call."""
    from gunicorn import util

    kind = "FormatError" if status_int < 500 else "UnavailableError"
    body = json_dumps({"error": f"{reason}: {mesg[:200]}" if mesg else reason, "kind": kind})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


def check_port_free(host: str, port: int) -> None:
    """A clear one-line error instead of gunicorn's retry loop on a taken port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(factory: Callable[[], Any], *, host: str, port: int, threads: int, name: str,
          on_exit: Callable[[], None] | None = None, graceful_timeout: int = 5, workers: int = 1) -> None:
    """Block serving `factory()` (called in the worker process, so threads it
    starts live there). `on_exit` runs in the worker when it stops. More than
    one worker only for a stateless app (the routers' front end)."""
    from gunicorn import util
    from gunicorn.app.base import BaseApplication

    check_port_free(host, port)
    # gunicorn's workers call util.write_error; this process serves only us.
    util.write_error = json_write_error
    def worker_exit(_server: Any, _worker: Any) -> None:
        if on_exit is not None:
            on_exit()

    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "graceful_timeout": graceful_timeout,
        "timeout": 120,
        "keepalive": 30,
        "proc_name": name,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "worker_exit": worker_exit,
    }

    class _App(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()

    _App().run()
