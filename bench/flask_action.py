"""Bench-only: the action's service as a Flask `create_app()` app, served by
the action's own one-process threaded server through WSGI.

The handler builds the WSGI environ itself and hands over the connection's
reader as `wsgi.input`; the views read `Content-Length` bytes from it
directly (no `request.get_data()`). bench/bench_flask.py measures this
against today's handler; the decision is in docs/performance.md.

    python -m bench.flask_action PORT   (settings from SESEMI_* as `python -m app`)
"""

from __future__ import annotations

import sys
from typing import Any, Callable


from flask import Flask, Response, request

import app
from app.config import ActionConfig
from app.server import ActionHTTPServer, ActionService, ActionHandler, create_server


def create_app(service: ActionService) -> Flask:
    fapp = Flask("sesemi-action")

    def body() -> bytes:
        n = request.environ.get("CONTENT_LENGTH")
        return request.environ["wsgi.input"].read(int(n)) if n else b""

    def answer(status_payload: tuple[int, bytes]) -> Response:
        status, payload = status_payload
        return Response(payload, status=status, mimetype="application/json")

    @fapp.post("/run")
    def run() -> Response:
        return answer(service.handle("POST", "/run", body()))

    @fapp.post("/init")
    def init() -> Response:
        return answer(service.handle("POST", "/init", body()))

    @fapp.get("/stats")
    def stats() -> Response:
        return answer(service.handle("GET", "/stats", b""))

    return fapp


class _WsgiHandler(ActionHandler):
    """The same limits as today's handler (411, 413), then WSGI instead of the direct call."""

    def dispatch(self, method: str) -> None:
        length = self.body_length(method)
        if length is None:
            return
        path, _, query = self.path.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(self.server.server_address[1]),
                   "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "CONTENT_LENGTH": str(length) if length else "", "wsgi.input": self.rfile, "wsgi.errors": sys.stderr,
                   "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.multithread": True,
                   "wsgi.multiprocess": False, "wsgi.run_once": False}
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            started[:] = [status, headers]
            return lambda data: None

        chunks = self.server.wsgi(environ, start_response)  # type: ignore[attr-defined]
        try:
            payload = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        status, headers = started
        head = "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() != "content-length")
        # One write, as today's handler (Nagle and delayed ACK otherwise).
        self.wfile.write(f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(payload)}\r\n\r\n".encode("latin-1")
                         + payload)


def create_wsgi_server(defaults: ActionConfig, host: str = "127.0.0.1", port: int = 8080,
                       max_connections: int = 64, max_body: int = 64 << 20) -> ActionHTTPServer:
    server = create_server(defaults, host, port, max_connections, max_body)
    server.RequestHandlerClass = _WsgiHandler
    server.wsgi = create_app(server.service).wsgi_app  # type: ignore[attr-defined]
    return server


if __name__ == "__main__":
    app.serve({}, host="127.0.0.1", port=int(sys.argv[1]), make_server=create_wsgi_server)
