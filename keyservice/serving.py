"""The key service's HTTP server: waitress, with the bounds anyone on the
internet would otherwise push past (issue 13, section B).

waitress alone (3.0) spools a body of up to 1 GiB before the application can
refuse it, stops accepting anyone once 100 connections are open (however
idle), lets a connection trickle a header for as long as each byte arrives
within 120 s, and answers its own errors in plain text. Here:

- bodies larger than the limit are refused from their Content-Length, before
  a byte of them is read (a chunked body is cut off at the limit);
- connections are bounded per client address and in total, and when a bound
  is reached the connection that has been idle longest (no request being
  served) is closed to make room: a client that holds hundreds of idle
  connections loses its oldest, and a new signed call or enclave key fetch
  still gets in;
- a request must arrive whole (header and body) within `read_timeout_s` of
  its first byte, and a kept-alive connection may idle `idle_timeout_s`;
- every answer waitress makes itself is JSON `{"error", "kind"}`.

Built on waitress's own extension points (`TcpWSGIServer.channel_class`,
`HTTPChannel.error_task_class`, `maintenance`), read from waitress 3.0's
server.py, channel.py and task.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from sesemi.encoding import json_dumps
from sesemi.errors import UnavailableError

from .limits import address_key


@dataclass(frozen=True)
class ServingLimits:
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 32 << 10
    max_connections: int = 400       # in total
    per_address: int = 32            # connections from one client address
    read_timeout_s: float = 10.0     # first byte of a request to its last
    idle_timeout_s: float = 15.0     # a kept-alive connection between requests


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (bad Content-Length, oversized header or body,
    bad header characters, a garbage request line) as JSON. The reason is
    waitress's class name for the error, never request text."""

    def execute(self) -> None:
        err = self.request.error
        code, reason = err.code, err.reason
        if str(getattr(err, "body", "")).startswith("Malformed HTTP method"):
            # A lowercase method: unrecognised (methods are case-sensitive), so 501 as the
            # action answers it (sesemi/http_methods.py).
            code, reason = 501, "Not Implemented"
        body = json_dumps({"error": f"{reason} (refused by the HTTP server)", "kind": "HTTPError"})
        self.status = f"{code} {reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    error_task_class = JsonErrorTask
    request_started: float | None = None  # first byte of the request being read

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        return result

    @property
    def evictable(self) -> bool:
        """Not serving a request: idle, or still sending one."""
        return not self.requests and self.connected


def _address(ch: HTTPChannel) -> str:
    return address_key(str(ch.addr[0] if isinstance(ch.addr, tuple) else ch.addr))


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel

    def __init__(self, app: Any, limits: ServingLimits, **kw: Any) -> None:
        self.limits = limits
        adj = Adjustments(
            max_request_body_size=limits.max_body_bytes, max_request_header_size=limits.max_header_bytes,
            # waitress's own cap stops accepting altogether; ours evicts instead, so
            # waitress's sits above it (the map also holds the listener and trigger).
            connection_limit=limits.max_connections + 16, channel_timeout=max(1, int(limits.idle_timeout_s)),
            cleanup_interval=1, asyncore_use_poll=True, inbuf_overflow=64 << 10, **kw)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        super().__init__(app, map={}, dispatcher=dispatcher, adj=adj)

    def _channels(self) -> list[GuardedChannel]:
        return [c for c in self.active_channels.values() if isinstance(c, GuardedChannel)]

    def _evict_one(self, among: list[GuardedChannel], keep: GuardedChannel) -> bool:
        idle = [c for c in among if c is not keep and c.evictable]
        if not idle:
            return False
        min(idle, key=lambda c: c.last_activity).handle_close()
        return True

    def handle_accept(self) -> None:
        before = set(self.active_channels)
        super().handle_accept()
        new = [c for k, c in self.active_channels.items() if k not in before and isinstance(c, GuardedChannel)]
        if not new:
            return
        ch = new[0]
        host = _address(ch)
        same = [c for c in self._channels() if _address(c) == host]
        if len(same) > self.limits.per_address and not self._evict_one(same, ch):
            ch.handle_close()  # every one of them is being served: refuse the newcomer
            return
        if len(self._channels()) > self.limits.max_connections and not self._evict_one(self._channels(), ch):
            ch.handle_close()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle kept-alive connections (channel_timeout)
        mono = time.monotonic()
        for ch in self._channels():
            if ch.request_started is not None and not ch.requests \
                    and mono - ch.request_started > self.limits.read_timeout_s:
                ch.will_close = True  # slow header or body (slowloris)


def serve(app: Any, *, host: str, port: int, threads: int, limits: ServingLimits, ident: str,
          on_listening: Callable[[], None] | None = None) -> None:
    """`on_listening` runs once the port is bound (the start-up log belongs there)."""
    try:
        server = GuardedServer(app, limits, host=host, port=port, threads=threads, ident=ident)
    except OSError as exc:
        raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}") from None
    if on_listening is not None:
        on_listening()
    try:
        server.run()
    finally:
        server.close()
