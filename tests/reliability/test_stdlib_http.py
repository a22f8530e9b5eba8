"""The key-service transport over http.client (sesemi/stdlib_http.py): the
same named bounds as the urllib3 transport it replaced for key-service calls,
a connection the peer closed is not reused, kept-alive ones are, and an answer
cannot grow the caller's memory without bound."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from sesemi import stdlib_http
from sesemi.client import EnclaveKeyClient, KeyServiceClient, KsPin
from sesemi.errors import TimeoutExpired, UnavailableError
from sesemi.identity import Identity
from sesemi.timeouts import Timeouts

from .silent import accepts_but_never_answers, never_accepts


@contextmanager
def scripted(answers: list[bytes], close_after_each: bool = False,
             heads: list[bytes] | None = None) -> Iterator[tuple[str, list[int]]]:
    """A server answering each request on a connection with the next canned
    answer; yields its URL and the number of requests each connection carried
    (and appends each request's head to `heads`)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    per_conn: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        n = len(per_conn)
        per_conn.append(0)
        buf = b""
        with conn:
            while answers and not stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                if heads is not None:
                    heads.append(head)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                per_conn[n] += 1
                conn.sendall(answers.pop(0))
                if close_after_each:
                    return

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", per_conn
    finally:
        stop.set()
        t.join()
        srv.close()


def ok(body: bytes = b'{"nonce": "00"}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def test_read_and_connect_bounds_are_named_for_key_service_calls():
    with accepts_but_never_answers() as url:
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=r"read timeout \(0.4 s\) expired.*did not answer") as ei:
            EnclaveKeyClient(url, Timeouts(1, 0.4)).nonce()
        assert ei.value.bound == "read" and time.monotonic() - t0 < 3
    with never_accepts() as url:
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=r"connect timeout \(0.4 s\) expired") as ei:
            EnclaveKeyClient(url, Timeouts(0.4, 5)).nonce()
        assert ei.value.bound == "connect" and time.monotonic() - t0 < 3


def test_a_refusal_is_not_a_timeout_and_says_why():
    with pytest.raises(UnavailableError, match=r"cannot reach http://127.0.0.1:9 \(ConnectionRefusedError\)") as ei:
        EnclaveKeyClient("http://127.0.0.1:9", Timeouts(1, 1)).nonce()
    assert not isinstance(ei.value, TimeoutExpired)
    pin = KsPin(url="http://127.0.0.1:9", hpke_public_key="00" * 32, tee="sim", mrenclave="00" * 32,
                mrsigner="00" * 32, isv_svn=0, insecure_simulation=True, signing_public_key="00" * 32)
    with pytest.raises(UnavailableError, match="cannot reach"):
        KeyServiceClient(pin, Timeouts(1, 1)).register(Identity.generate("alice"))


def test_kept_alive_connections_are_reused_and_closed_ones_are_not():
    with scripted([ok(), ok(), ok()]) as (url, per_conn):
        pool = stdlib_http.Pool()
        for _ in range(3):
            assert pool.request("POST", url + "/v1/enclave/nonce", b"{}", timeout=(1, 1)).status == 200
        assert per_conn == [3]
    with scripted([ok(), ok()], close_after_each=True) as (url, per_conn):
        pool = stdlib_http.Pool()
        assert pool.request("POST", url + "/x", b"{}", timeout=(1, 1)).status == 200
        time.sleep(0.2)  # the peer's FIN arrives: the idle connection is now readable
        # Reusing it would send the request into a closed socket and fail; a fresh one succeeds.
        assert pool.request("POST", url + "/x", b"{}", timeout=(1, 1)).status == 200
        assert per_conn == [1, 1]


def test_an_oversized_or_malformed_answer_is_refused_without_reading_it():
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n" + b"x" * 1000
    with scripted([huge]) as (url, _):
        with pytest.raises(stdlib_http.ConnectFailed, match="too large"):
            stdlib_http.Pool(max_response=1 << 20).request("GET", url + "/", timeout=(1, 1))
    # http.client would keep each piece of a chunked answer as its own object: 2-byte
    # chunks would cost far more memory than the bytes sent. Refused outright.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"2\r\nyy\r\n" * 1000 + b"0\r\n\r\n"
    with scripted([chunked]) as (url, _):
        with pytest.raises(stdlib_http.ConnectFailed, match="chunked answer refused"):
            stdlib_http.Pool(max_response=1 << 20).request("GET", url + "/", timeout=(1, 2))
    bodyless = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * (2 << 20)
    with scripted([bodyless]) as (url, _):
        with pytest.raises(stdlib_http.ConnectFailed, match="larger than 1048576 bytes"):
            stdlib_http.Pool(max_response=1 << 20).request("GET", url + "/", timeout=(1, 2))
    # "²" (latin-1 0xb2) passes str.isdigit() and fails int(): a refusal, not a ValueError.
    for length in (b"\xb2", b"1" * 5000, b"-1"):
        with scripted([b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nx"]) as (url, _):
            with pytest.raises(stdlib_http.ConnectFailed):
                stdlib_http.Pool().request("GET", url + "/", timeout=(1, 1))
    with scripted([b"garbage\r\n\r\n"]) as (url, _):
        with pytest.raises(UnavailableError, match=r"cannot reach .*\(BadStatusLine\)"):
            EnclaveKeyClient(url, Timeouts(1, 1)).nonce()


def test_headers_are_case_insensitive_and_the_target_is_sent_as_given():
    heads: list[bytes] = []
    with scripted([ok(extra=b"x-sesemi-state: v1\r\n")], heads=heads) as (url, _):
        resp = stdlib_http.Pool().request("GET", url + "/v1/attestation?nonce=ab", timeout=(1, 1))
        assert resp.headers.get("X-Sesemi-State") == "v1" and resp.data == b'{"nonce": "00"}'
    assert heads[0].split(b"\r\n")[0] == b"GET /v1/attestation?nonce=ab HTTP/1.1"


def test_the_read_bound_is_a_deadline_for_the_whole_answer():
    """A peer that drips its answer a byte at a time, each byte inside the
    read bound, is cut off when the bound expires for the answer as a whole;
    likewise one that sends `100 Continue` forever."""
    def dripping(payload: bytes):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        stop = threading.Event()

        def serve() -> None:
            conn, _ = srv.accept()
            conn.recv(65536)
            with conn:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(payload[i % len(payload):i % len(payload) + 1])
                    except OSError:
                        return
                    time.sleep(0.05)

        threading.Thread(target=serve, daemon=True).start()
        return srv, stop

    for payload in (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 5000, b"HTTP/1.1 100 Continue\r\n\r\n"):
        srv, stop = dripping(payload)
        t0 = time.monotonic()
        with pytest.raises(stdlib_http.ReadTimeout):
            stdlib_http.Pool().request("GET", f"http://127.0.0.1:{srv.getsockname()[1]}/", timeout=(1, 0.6))
        assert time.monotonic() - t0 < 2.5
        stop.set()
        srv.close()
