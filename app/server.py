"""The OpenWhisk action protocol: POST /init once, POST /run per activation.

One process, a thread per connection (Occlum cannot fork). The HTTP layer is
the standard library's threading server with a handler of a few dozen lines,
like OpenWhisk's own launchers: on a 600 KB tensor, Flask and waitress cost
about 1 ms per call more than this (docs/performance.md), and the only client
is the platform's invoker (or a router), never a browser. Limits that a bare
`http.server` lacks are added here: body size, idle and header timeouts, a
cap on concurrent connections.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import FormatError, SesemiError, UnavailableError
from sesemi.http_errors import error_body

from .config import ActionConfig
from .runtime import Runtime

log = logging.getLogger("sesemi.action")


class ActionService:
    """Transport-independent: what /init, /run and /stats do. Returns (status, JSON bytes)."""

    def __init__(self, defaults: ActionConfig) -> None:
        self.defaults = defaults
        self.runtime: Runtime | None = None
        self._init_lock = threading.Lock()
        self._init_attempted = False

    @staticmethod
    def _value(body: bytes) -> dict[str, Any]:
        try:
            doc = json_loads(body)
        except JSONDecodeError:
            raise FormatError("body is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("value", {}), dict):
            raise FormatError("body must be a JSON object with an object 'value'")
        return doc.get("value", {})

    def initialise(self, env: dict[str, Any]) -> Runtime:
        with self._init_lock:
            if self._init_attempted:
                raise _AlreadyInitialised()
            config = self.defaults.with_untrusted_env(env)
            # Marked before trying: a failed init leaves the container for the
            # platform to discard, as OpenWhisk does.
            self._init_attempted = True
            self.runtime = Runtime(config)
            return self.runtime

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            if method == "POST" and path == "/run":
                rt = self.runtime
                if rt is None:
                    raise UnavailableError("action is not initialised (POST /init first)")
                t0 = time.perf_counter()
                out = json_dumps(rt.run(self._value(body)))
                rt.handle_s.append(time.perf_counter() - t0)
                return 200, out
            if method == "POST" and path == "/init":
                env = self._value(body).get("env") or {}
                if not isinstance(env, dict):
                    raise FormatError("value.env must be an object")
                rt = self.initialise(env)
                return 200, json_dumps({"ok": True, "mrenclave": rt.mrenclave, **rt.labels})
            if method == "GET" and path == "/stats":
                return 200, json_dumps(self.runtime.stats() if self.runtime else {"initialised": False})
            return 404, json_dumps({"error": f"no route {method} {path}"})
        except _AlreadyInitialised:
            return 403, json_dumps({"error": "Cannot initialize the action more than once."})
        except SesemiError as exc:
            log.info("%s refused: %s (%s)", path, type(exc).__name__, exc)
            return exc.http_status, json_dumps(error_body(exc))
        except Exception as exc:  # noqa: BLE001 - the type only: a message might quote data
            log.error("internal error on %s: %s", path, type(exc).__name__)
            return 500, json_dumps({"error": "internal error in the action"})


class _AlreadyInitialised(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive and slow-body bound (socket timeout)
    server: "ActionHTTPServer"

    def _respond(self, status: int, payload: bytes) -> None:
        # One write: headers and body apart would meet Nagle and delayed ACK (40 ms).
        reason = self.responses.get(status, ("",))[0]
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (status, reason.encode(), len(payload)) + payload)

    def _body_length(self, method: str) -> int | None:
        """The request's Content-Length, or None once a 411/413 has been answered."""
        length = self.headers.get("Content-Length")
        if length is not None and not length.isdigit() or method == "POST" and length is None:
            self.close_connection = True
            self._respond(411, b'{"error":"Content-Length required"}')
            return None
        if length is not None and int(length) > self.server.max_body:
            self.close_connection = True
            self._respond(413, b'{"error":"request body too large"}')
            return None
        return int(length or 0)

    def _dispatch(self, method: str) -> None:
        length = self._body_length(method)
        if length is None:
            return
        body = self.rfile.read(length) if length else b""
        self._respond(*self.server.service.handle(method, self.path.split("?", 1)[0], body))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def log_message(self, fmt: str, *args: Any) -> None:  # request lines hold no payload; keep them quiet
        pass


class ActionHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], service: ActionService, max_connections: int,
                 max_body: int) -> None:
        self.service = service
        self.max_body = max_body
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(addr, _Handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 37\r\nConnection: close\r\n\r\n{\"error\":\"too many open connections\"}")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def create_server(defaults: ActionConfig, host: str = "127.0.0.1", port: int = 8080, max_connections: int = 64,
                  max_body: int = 64 << 20) -> ActionHTTPServer:
    """A fresh server with its own service state (no globals: tests build their own)."""
    return ActionHTTPServer((host, port), ActionService(defaults), max_connections, max_body)
