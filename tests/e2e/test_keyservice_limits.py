"""The key service's HTTP server under an anonymous caller's weight: bodies refused before they are read, idle
connections that cannot lock others out, slow requests cut off, and every
answer of the HTTP server itself in JSON."""

from __future__ import annotations

import socket
import time

import pytest

from bundle_tool.testing.processes import start_keyservice
from sesemi import hpke_box, signed_call
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.encoding import json_loads
from sesemi.identity import Identity
from sesemi.timeouts import Timeouts


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    srv = start_keyservice(tmp_path_factory.mktemp("ks"), extra=["--read-timeout-s", "1"])
    yield srv
    srv.stop()


def _addr(srv) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").split(":")
    return host, int(port)


def _exchange(srv, raw: bytes, timeout: float = 10) -> tuple[int, bytes]:
    with socket.create_connection(_addr(srv), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def body_read_before_refusal(srv, declared: int, limit_sent: int) -> tuple[int, int | None]:
    """Stream a body of `declared` bytes; return (bytes the server took before it
    answered or closed, the status it answered)."""
    return stream_until_answered(srv, b"POST /v1/enclave/attest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % declared, b"x" * 65536, limit_sent)


def stream_until_answered(srv, head: bytes, chunk: bytes, limit_sent: int) -> tuple[int, int | None]:
    """Send `head`, then `chunk` again and again until the server answers or
    closes (or `limit_sent` bytes); return (bytes sent, the status answered)."""
    with socket.create_connection(_addr(srv), timeout=10) as s:
        s.sendall(head)
        s.settimeout(0.05)
        sent, status = 0, None
        while sent < limit_sent:
            try:
                sent += s.send(chunk)
            except (BlockingIOError, TimeoutError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                head = s.recv(4096)
                if head:
                    status = int(head.split(b" ", 2)[1])
                break
            except (BlockingIOError, TimeoutError):
                continue
            except ConnectionResetError:
                break
        return sent, status


def test_oversized_body_is_refused_before_it_is_read(ks):
    """Item 6: old waitress read (and spooled) the whole declared body before
    Flask's 413; now the refusal comes from the Content-Length alone."""
    sent, status = body_read_before_refusal(ks, 256 << 20, 64 << 20)
    assert status == 413, (sent, status)
    assert sent < 16 << 20, f"the server took {sent} bytes of an oversized body"


@pytest.mark.parametrize("raw", [
    b"POST /v1/principals HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/principals HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/principals HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 10) + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: 1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x7f\x00\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"POST /v1/principals HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
])
def test_the_http_servers_own_refusals_are_json(ks, raw):
    status, body = _exchange(ks, raw)
    assert 400 <= status < 500, (status, body)
    assert json_loads(body)["error"]


def _signed_call_latency(ks, held: list[socket.socket]) -> float:
    pin = attest_key_service(ks.url, insecure_sim=True, timeouts=Timeouts(5, 10))
    c = KeyServiceClient(pin, Timeouts(5, 10))
    owner = Identity.generate("o")
    c.register(owner)
    t0 = time.perf_counter()
    c.audit(owner)
    return time.perf_counter() - t0


def hold_idle_connections(srv, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        s.connect(_addr(srv))
        held.append(s)
    return held


def test_200_idle_connections_do_not_lock_out_a_signed_call(ks):
    """Item 7: waitress's 100-connection limit stopped everyone; now the oldest
    idle connections make room. A fresh, signed call gets through."""
    held = hold_idle_connections(ks, 200)
    try:
        time.sleep(0.2)
        latency = _signed_call_latency(ks, held)
    finally:
        for s in held:
            s.close()
    print(f"signed call with 200 idle connections held: {latency * 1e3:.0f} ms")
    assert latency < 10  # the old server: no answer at all until its 120 s channel timeout


def test_a_slowly_sent_request_is_cut_off(ks):
    """Item 7: one byte every second keeps a channel 'active' for waitress;
    the read bound closes it anyway."""
    with socket.create_connection(_addr(ks), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 20:
            try:
                s.sendall(b"X")
                s.settimeout(1)
                if s.recv(1) == b"":
                    closed = True
                    break
            except (TimeoutError, socket.timeout):
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed, "a trickled header kept its connection for 20 s (bound: 1 s)"


def test_a_percent_encoded_newline_forges_no_log_line(ks):
    """The key service logged the decoded path."""
    status, _ = _exchange(ks, b"GET /v1/models/x%0A2026-01-01%20keyservice%20INFO%20forged HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
    assert 400 <= status < 500
    time.sleep(0.2)
    assert not [line for line in ks.log_text().splitlines() if line.startswith("2026-01-01 keyservice INFO forged")]


def test_slow_anonymous_work_leaves_threads_for_signed_calls(tmp_path):
    """Item 7's reserve: attestations stuck on a PCCS that never answers hold
    at most the anonymous share of the threads, with or without forged
    credential headers; a signed call still runs."""
    import base64
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import urllib3

    from sesemi.encoding import json_dumps

    from ..unit import dcap_fixture as fx

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # accepts, never answers
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        blackhole.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(blackhole.accept()[0])
            except OSError:
                pass

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    srv = start_keyservice(tmp_path, extra=["--threads", "4", "--pccs-url",
                                            f"http://127.0.0.1:{blackhole.getsockname()[1]}"])
    try:
        http = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(connect=5, read=40))
        pin = attest_key_service(srv.url, insecure_sim=True, timeouts=Timeouts(5, 10))
        client = KeyServiceClient(pin, Timeouts(5, 10))
        owner = Identity.generate("o")
        client.register(owner)
        quote = base64.b64encode(fx.quote()).decode()

        enclave_pub = hpke_box.public_raw(hpke_box.new_private_key())

        def stuck_attestation(i):
            # Every other one carries forged credential headers, which routes that
            # check no credential must not count as one (they would take the reserve).
            forged = {"Authorization": "Bearer junk", signed_call.H_SIGNATURE: "AAAA"} if i % 2 else {}
            r = http.request("POST", srv.url + "/v1/enclave/nonce", headers=forged)
            if r.status != 200:
                return r.status  # busy: the anonymous share is taken
            nonce = json_loads(r.data)["nonce"]
            body = json_dumps({"nonce": nonce, "evidence": {"type": "sgx-dcap", "quote": quote},
                               "public_key": base64.b64encode(enclave_pub).decode()})
            return http.request("POST", srv.url + "/v1/enclave/attest", body=body,
                                headers={"Content-Type": "application/json", **forged}).status

        pool = ThreadPoolExecutor(6)
        pending = [pool.submit(stuck_attestation, i) for i in range(6)]
        time.sleep(1.0)  # they are now waiting on the PCCS, or were refused as busy
        t0 = time.perf_counter()
        client.audit(owner)
        latency = time.perf_counter() - t0
        refused = [f.result() for f in pending if f.done() and f.exception() is None]
        assert latency < 5, latency  # before: every thread waited on the PCCS (10 s and more)
        assert refused and set(refused) == {503}, refused
        srv.stop()  # the stuck ones end with it
        pool.shutdown(wait=True)
    finally:
        stop.set()
        srv.stop()
        for s in held:
            s.close()
        blackhole.close()
