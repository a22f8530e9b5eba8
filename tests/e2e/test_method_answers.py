"""The action and the key service answer request methods alike (RFC 9110):
501 for a method neither implements, 405 for a recognised one the resource
does not allow; JSON either way (docs/reliability.md)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from app.server import _Handler
from sesemi import http_methods


def _ask(url: str, method: str, path: str) -> tuple[int, dict]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method in ("POST", "PUT", "PATCH") else None)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["FOO", "BREW", "PROPFIND", "get"])
def test_an_unrecognised_method_is_501_from_both(world, action, method):
    for url, path in ((action.url, "/run"), (world.ks_server.url, "/run"),
                      (world.ks_server.url, "/v1/enclave/keys")):
        status, body = _ask(url, method, path)
        assert status == 501 and body, (url, path, status, body)


def test_a_recognised_method_not_allowed_is_405_from_both(world, action):
    status, _ = _ask(action.url, "PUT", "/run")
    assert status == 405
    status, _ = _ask(world.ks_server.url, "PUT", "/v1/enclave/keys")
    assert status == 405


def test_the_action_refuses_every_recognised_method_it_does_not_serve():
    assert {m for m in http_methods.KNOWN if hasattr(_Handler, f"do_{m}")} == http_methods.KNOWN
