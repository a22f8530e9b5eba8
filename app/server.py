"""The OpenWhisk action protocol: POST /init once, POST /run per activation.

One process, a thread per connection (Occlum cannot fork). The HTTP layer is
the standard library's threading server with a handler of a few dozen lines,
like OpenWhisk's own launchers: on a 600 KB tensor, Flask and waitress cost
about 1 ms per call more than this (docs/performance.md), and the only client
is the platform's invoker (or a router), never a browser. Limits that a bare
`http.server` lacks are added here: body size, idle and header timeouts, a
cap on concurrent connections (over it, connections wait), and JSON for
every answer, the HTTP layer's own refusals included.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sesemi.encoding import JSONDecodeError, json_dumps, json_loads
from sesemi.errors import AccessDenied, FormatError, NotFound, SesemiError, UnavailableError
from sesemi.http_errors import action_error

from .config import ActionConfig
from .runtime import Runtime

log = logging.getLogger("sesemi.action")


_NOT_INITIALISED = "action is not initialised (POST /init first)"


class ActionService:
    """Transport-independent: what /init, /run and /stats do. Returns (status, JSON bytes).

    Statuses are chosen for how OpenWhisk's invoker reads them
    (core/entity/ActivationResult.scala and core/containerpool/Container.scala
    in apache/openwhisk; docs/platform.md has the table):
    - /run refusals are application errors, 200 with a structured `error`, so
      OpenWhisk keeps the container and the router learns kind and status;
    - never 503: to the invoker that means "the runtime is shutting down", a
      container-health failure that destroys the container and reschedules;
    - a failed /init is a developer error (non-200, non-503);
    - /run before /init answers 502 as the reference action proxy does
      (openwhisk-runtime-docker core/actionProxy/actionproxy.py).
    """

    def __init__(self, defaults: ActionConfig) -> None:
        self.defaults = defaults
        self.runtime: Runtime | None = None
        self._init_lock = threading.Lock()

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
        """Only a successful /init is final: a refused one (a bad setting, the
        key service unreachable) leaves the action free to take another."""
        with self._init_lock:
            if self.runtime is not None:
                raise _AlreadyInitialised()
            config = self.defaults.with_untrusted_env(env)
            self.runtime = Runtime(config)
            return self.runtime

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path in ("/run", "/init") and method != "POST" or path == "/stats" and method != "GET":
            return _reply(405, FormatError(f"{method} is not allowed on {path}"))
        if path == "/run":
            return self._run(body)
        if path == "/init":
            return self._init(body)
        if path == "/stats":
            return 200, json_dumps(self.runtime.stats() if self.runtime else {"initialised": False})
        return _reply(404, NotFound(f"no route {path[:200]}"))

    def _run(self, body: bytes) -> tuple[int, bytes]:
        rt = self.runtime
        if rt is None:
            return _reply(502, UnavailableError(_NOT_INITIALISED), 503)
        try:
            t0 = time.perf_counter()
            out = json_dumps(rt.run(self._value(body)))
            rt.handle_s.append(time.perf_counter() - t0)
            return 200, out
        except SesemiError as exc:
            log.info("/run refused: %s (%s)", type(exc).__name__, exc)
            return _reply(200, exc)
        except Exception as exc:  # noqa: BLE001 - the type only: a message might quote data
            log.error("internal error on /run: %s", type(exc).__name__)
            return _reply(500, _Internal("internal error in the action"), 500)

    def _init(self, body: bytes) -> tuple[int, bytes]:
        try:
            env = self._value(body).get("env") or {}
            if not isinstance(env, dict):
                raise FormatError("value.env must be an object")
            rt = self.initialise(env)
            return 200, json_dumps({"ok": True, "mrenclave": rt.mrenclave, **rt.labels})
        except _AlreadyInitialised:
            return _reply(403, AccessDenied("Cannot initialize the action more than once."))
        except SesemiError as exc:
            log.info("/init refused: %s (%s)", type(exc).__name__, exc)
            # A developer error; 503 would read as a runtime shutting down.
            return _reply(502 if exc.http_status == 503 else exc.http_status, exc)
        except Exception as exc:  # noqa: BLE001
            log.error("internal error on /init: %s", type(exc).__name__)
            return _reply(500, _Internal("internal error in the action"), 500)


class _AlreadyInitialised(Exception):
    pass


class _Internal(SesemiError):
    http_status = 500


def _reply(status: int, exc: SesemiError, inner_status: int | None = None) -> tuple[int, bytes]:
    return status, json_dumps(action_error(exc, inner_status))


def _error_bytes(status: int, message: str) -> bytes:
    return json_dumps({"error": {"kind": "FormatError", "status": status, "message": message}})


class _Handler(BaseHTTPRequestHandler):
    """Every answer, the HTTP layer's own included, is JSON (see send_error)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive and slow-body bound (socket timeout)
    server: "ActionHTTPServer"

    def _respond(self, status: int, payload: bytes, head_only: bool = False) -> None:
        # One write: headers and body apart would meet Nagle and delayed ACK (40 ms).
        reason = self.responses.get(status, ("",))[0]
        close = b"Connection: close\r\n" if self.close_connection else b""
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                         % (status, reason.encode(), len(payload), close) + (b"" if head_only else payload))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (garbage request line, 414, 431, unknown
        method) in JSON rather than its HTML page; the connection closes, as
        the stream may be out of step."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        try:
            self._respond(code, _error_bytes(code, text))
        except OSError:
            pass

    def _body_length(self, method: str) -> int | None:
        """The request's Content-Length, or None once a 411/413 has been answered."""
        length = self.headers.get("Content-Length")
        # isascii: str.isdigit() accepts "²", which int() refuses.
        if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 12) \
                or method == "POST" and length is None:
            self.close_connection = True
            self._respond(411, _error_bytes(411, "a decimal Content-Length is required"))
            return None
        if length is not None and int(length) > self.server.max_body:
            self.close_connection = True
            self._respond(413, _error_bytes(413, "request body too large"))
            return None
        return int(length or 0)

    def _dispatch(self, method: str) -> None:
        try:
            length = self._body_length(method)
            if length is None:
                return
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                self.close_connection = True
                return
            status, payload = self.server.service.handle(method, self.path.split("?", 1)[0], body)
        except OSError:
            self.close_connection = True
            return
        except Exception as exc:  # noqa: BLE001 - a bug here must not kill the thread with a traceback
            log.error("internal error in the HTTP layer: %s", type(exc).__name__)
            self.close_connection = True
            status, payload = 500, _error_bytes(500, "internal error in the action")
        self._respond(status, payload, head_only=method == "HEAD")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._respond(405, _error_bytes(405, f"{self.command} is not allowed"), head_only=self.command == "HEAD")

    # Every other recognised method is refused 405; an unrecognised one finds no
    # do_<METHOD> and http.server answers 501 (send_error), as the key service does.
    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def log_message(self, fmt: str, *args: Any) -> None:  # request lines hold no payload; keep them quiet
        pass


class ActionHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], service: ActionService, max_connections: int,
                 max_body: int, slot_wait_s: float = 30.0) -> None:
        self.service = service
        self.max_body = max_body
        self.max_connections = max_connections
        self.slot_wait_s = slot_wait_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(addr, _Handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        # At the cap, wait for a slot instead of refusing: the accept loop
        # pauses and further connections queue in the listen backlog. A 503
        # would tell OpenWhisk the container is shutting down.
        if not self._slots.acquire(timeout=self.slot_wait_s):
            try:
                request.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                % (len(body := _error_bytes(429, "too many open connections")), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("connection error: %s", sys.exc_info()[0].__name__ if sys.exc_info()[0] else "?")


def create_server(defaults: ActionConfig, host: str = "127.0.0.1", port: int = 8080, max_connections: int = 64,
                  max_body: int = 64 << 20) -> ActionHTTPServer:
    """A fresh server with its own service state (no globals: tests build their own)."""
    return ActionHTTPServer((host, port), ActionService(defaults), max_connections, max_body)
