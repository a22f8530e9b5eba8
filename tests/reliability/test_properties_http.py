"""Property tests below the application: raw HTTP requests with
odd request lines, methods, header names and values, and Content-Length
forms, written straight to a socket. Whatever the HTTP server itself refuses
must still be answered in JSON with a 4xx (or the connection closed without
an answer), never plain text, HTML, a 5xx or a hang; and the server still
serves a valid request afterwards."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import example, strategies as st

from .figures import count, twin
from .test_properties_endpoints import _still_serves

_token = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=12)
_method = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW", "get"]),
                    _token)
_target = st.one_of(st.sampled_from(["/healthz", "/run", "/init", "/stats", "/v1/enclave/nonce", "*", "",
                                     "/" + "a" * 70000]), _token.map(lambda t: "/" + t))
_version = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "", "http/1.1"])
_length = st.sampled_from(["-1", "abc", "1, 2", "\u00b2", "99999999999999999999", "0", "5", " 3", "+4", ""])
_hname = st.one_of(st.sampled_from(["Content-Type", "Transfer-Encoding", "Expect", "Connection", "Host"]), _token)
_hvalue = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                    st.sampled_from(["chunked", "100-continue", "\x00", "a\rb", "\u00e9"]))
_request = st.tuples(_method, _target, _version, st.none() | _length,
                     st.lists(st.tuples(_hname, _hvalue), max_size=4), st.binary(max_size=40),
                     st.integers(0, 120))


def _raw(url: str, parts) -> bytes:
    method, target, version, length, headers, body, many = parts
    lines = [f"{method} {target} {version}".rstrip()]
    lines.append("Host: x")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"X-Filler-{i}: y" for i in range(many)]  # header-count limits
    return "\r\n".join(lines).encode("utf-8", "surrogatepass") + b"\r\n\r\n" + body


def _exchange(url: str, data: bytes) -> bytes:
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading it all
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _check(url: str, parts) -> None:
    count("property cases: raw HTTP")
    answer = _exchange(url, _raw(url, parts))
    if not answer:
        return  # closed without an answer: allowed for a request that is not HTTP at all
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), answer[:200]
    status = int(status_line.split()[1])
    # 501 (a transfer coding it does not implement) and 505 (an HTTP version it does
    # not speak) are HTTP's own words for those; anything else from 500 up is a fault.
    assert status < 500 or status in (501, 505), answer[:300]
    if parts[0] != "HEAD" and status >= 400:
        assert b"application/json" in head.lower() and body.lstrip().startswith(b"{"), answer[:300]


@twin(_request, fast=60, soak=1500)
@example(("POST", "/v1/enclave/nonce", "HTTP/1.1", "abc", [], b"", 0))
@example(("POST", "/v1/enclave/nonce", "HTTP/1.1", "-1", [], b"", 0))
@example(("GARBAGE", "", "", None, [], b"", 0))
def _ks(w, parts):
    _check(w.ks_server.url, parts)


@twin(_request, fast=60, soak=1500)
@example(("PUT", "/run", "HTTP/1.1", "0", [], b"", 0))
@example(("POST", "/run", "HTTP/1.1", "\u00b2", [], b"", 0))
@example(("GET", "/" + "a" * 70000, "HTTP/1.1", None, [], b"", 0))
@example(("GET", "/stats", "HTTP/1.1", None, [], b"", 120))
def _action(w, parts):
    _check(w.act.url, parts)


def test_keyservice_raw_http(w):
    _ks[0](w)
    _still_serves(w)


@pytest.mark.soak
def test_keyservice_raw_http_soak(w):
    _ks[1](w)
    _still_serves(w)


def test_action_raw_http(w):
    _action[0](w)
    _still_serves(w)


@pytest.mark.soak
def test_action_raw_http_soak(w):
    _action[1](w)
    _still_serves(w)
