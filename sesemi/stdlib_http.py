"""A kept-alive HTTP/1.1 client over the standard library's `http.client`, for
calls to the key service: small JSON bodies, signed answers.

Why not urllib3, which the SDK's inference client keeps: the action makes
these calls too, and it pays every import on every cold start and carries
every imported file in its enclave image. urllib3 was 9 % of the action's
import time (`python -X importtime`; docs/performance.md, "Cold start"), and
`http.client` is already imported by the action's own HTTP server.

What it keeps from how the SDK used urllib3 (`retries=False`): no retries, a
connect bound and a read bound per call, each reported as its own error, and
an idle connection found closed by its peer is dropped before it is reused
(as urllib3's `connectionpool._get_conn` does with `is_connection_dropped`),
never after a request was sent on it. What it adds, since the network is the
host's: the read bound is a deadline for the whole answer, not a bound per
socket read (a peer dripping a byte at a time, or `100 Continue` forever, is
cut off when it expires); an answer's size is bounded, and chunked answers,
whose pieces http.client keeps as separate objects, are refused (the key
service always sends Content-Length).
"""

from __future__ import annotations

import functools
import http.client
import io
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

MAX_RESPONSE = 8 << 20


class TransportError(Exception):
    """The call did not complete; the subclass says why."""


class ConnectTimeout(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class ConnectFailed(TransportError):
    """Refused, reset, unresolvable, a TLS failure, or a malformed or oversized answer."""


def bound_of(exc: Exception) -> str | None:
    """Which bound a failed call hit: "connect", "read", or None (not a timeout)."""
    return "connect" if isinstance(exc, ConnectTimeout) else "read" if isinstance(exc, ReadTimeout) else None


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage   # case-insensitive .get()
    data: bytes


class _DeadlineReader(io.RawIOBase):
    """The response's byte stream: every read waits at most until the call's
    deadline. Wraps the socket's own reader (socket.SocketIO), which keeps the
    descriptor open while the response is read, even once the connection is closed."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float) -> None:
        self._raw, self._sock, self._deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:  # a writable buffer
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer's deadline passed")
        self._sock.settimeout(left)
        return self._raw.readinto(buf)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None,
                 *, deadline: float) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class Pool:
    """Up to `maxsize` idle connections per (scheme, host, port), shared by threads."""

    errors = (TransportError,)
    bound_of = staticmethod(bound_of)

    def __init__(self, maxsize: int = 16, max_response: int = MAX_RESPONSE) -> None:
        self.maxsize = maxsize
        self.max_response = max_response
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: Any = None

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: tuple[float, float] = (5.0, 15.0)) -> Response:
        connect_s, read_s = timeout
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {url[:200]!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConnectFailed(f"bad port in {url[:200]!r}") from None
        key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._take(key)
        if conn is None:
            conn = self._connect(key, connect_s)
        try:
            conn.sock.settimeout(read_s)
            conn.response_class = functools.partial(_Response, deadline=time.monotonic() + read_s)  # type: ignore[assignment]
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            if resp.chunked:
                raise ConnectFailed("chunked answer refused (the key service sends Content-Length)")
            length = resp.getheader("Content-Length")
            # isascii: str.isdigit() accepts "²", which int() refuses.
            if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 12
                                           and int(length) <= self.max_response):
                raise ConnectFailed(f"answer too large or malformed (Content-Length {length[:20]!r})")
            data = resp.read(self.max_response + 1)
            if len(data) > self.max_response:
                raise ConnectFailed(f"answer larger than {self.max_response} bytes")
            reusable = resp.isclosed() and not resp.will_close
        except TimeoutError:
            conn.close()
            raise ReadTimeout(f"read timeout ({read_s:g} s)") from None
        except ConnectFailed:
            conn.close()
            raise
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ConnectFailed(type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - anything the peer's bytes provoke is its failure, not a crash
            conn.close()
            raise ConnectFailed(f"malformed answer ({type(exc).__name__})") from None
        if reusable:
            self._give_back(key, conn)
        else:
            conn.close()
        return Response(resp.status, resp.headers, data)

    def _connect(self, key: tuple[str, str, int], connect_s: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=connect_s, context=self._tls_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_s)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise ConnectTimeout(f"connect timeout ({connect_s:g} s)") from None
        except OSError as exc:
            conn.close()
            raise ConnectFailed(type(exc).__name__) from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _tls_context(self) -> Any:  # ssl.SSLContext, imported only for https
        if self._tls is None:
            import ssl
            self._tls = ssl.create_default_context()  # the system's CA bundle, as urllib3's default
        return self._tls

    def _take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return None
            if conn.sock is not None and not _dropped(conn.sock):
                return conn
            conn.close()

    def _give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.maxsize:
                idle.append(conn)
                return
        conn.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-alive socket that is readable has been closed by its peer
    (or holds bytes nobody asked for): either way it must not be reused. poll,
    not select, which refuses descriptors above 1023; and bytes a TLS layer
    already decrypted do not make the socket readable, so ask it too."""
    pending = getattr(sock, "pending", None)
    try:
        if pending is not None and pending():
            return True
        p = select.poll()
        p.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True
