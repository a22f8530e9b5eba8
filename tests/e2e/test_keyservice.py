"""Key-service API over HTTP: authentication, replay, ownership, durability, bad input."""

from __future__ import annotations

import time

import pytest
import requests

from bundle_tool.procs import start_keyservice
from sesemi import signed_call
from sesemi.encoding import b64e, json_dumps, json_loads
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.errors import AccessDenied, AuthError, FormatError, IntegrityError, NotFound
from sesemi.identity import Identity
from sesemi.sealed_model import new_model_key
from sesemi.policy import EnclavePolicy
from sesemi.timeouts import Timeouts

MR = "ab" * 32
SEAL = "cd" * 16


@pytest.fixture()
def ks(tmp_path):
    srv = start_keyservice(tmp_path)
    yield srv, tmp_path
    srv.stop()


@pytest.fixture(scope="module")
def shared_ks(tmp_path_factory):
    """For tests that need no fresh state: one key service start, not one each."""
    srv = start_keyservice(tmp_path_factory.mktemp("shared"))
    yield srv, None
    srv.stop()


def _client(url):
    return KeyServiceClient(attest_key_service(url, insecure_sim=True))


def test_signed_call_replay_refused(ks):
    srv, _ = ks
    c = _client(srv.url)
    owner = Identity.generate("o")
    c.register(owner)
    path = "/v1/principals"  # a write (registering again changes nothing, but claims its number)
    body = json_dumps({"public_key": b64e(owner.public_raw)})
    headers = signed_call.sign(owner, "POST", path, c.pin.audience, body, time.time(),
                               c.counter.next(owner.principal_id))
    headers["Content-Type"] = "application/json"
    r1 = requests.post(srv.url + path, data=body, headers=headers, timeout=5)
    r2 = requests.post(srv.url + path, data=body, headers=headers, timeout=5)
    assert r1.status_code == 200
    assert r2.status_code == 409 and "replayed" in r2.json()["error"]
    r3 = requests.get(srv.url + "/v1/audit", timeout=5)
    assert r3.status_code == 401 and "unsigned" in r3.json()["error"]


def _raw(url: str, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict]:
    """One request with the target exactly as given (no client-side normalising)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, target, headers=headers)
        resp = conn.getresponse()
        return resp.status, json_loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("sent", ["/v1/audit?model_id=m??", "/v1/audit?model_id=m?", "/v1/audi%74?model_id=m",
                                  "/v1/audit?model_id=%6d", "/v1/audit?model_id=m&", "/v1/./audit?model_id=m"])
def test_signed_target_is_verified_as_sent(shared_ks, sent):
    """Issue 13 item 24: a signature over one spelling verifies for no other."""
    srv, _ = shared_ks
    c = _client(srv.url)
    owner = Identity.generate("o")
    c.register(owner)
    try:
        c.publish_model(owner, "m", new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    except AccessDenied:  # an earlier case's owner published it: any owner's audit call will do
        pass
    signed = "/v1/audit?model_id=m"
    h = signed_call.sign(owner, "GET", signed, c.pin.audience, b"", time.time(),
                         c.counter.next(owner.principal_id))
    status, body = _raw(srv.url, "GET", sent, h)
    assert 400 <= status < 500 and body["error"], (status, body)
    status, body = _raw(srv.url, "GET", signed, h)  # the same headers on the signed spelling still pass
    assert status in (200, 403), body  # accepted (403: not this model's owner, so authenticated)
    assert body.get("kind") != "StaleSequence"


def test_a_client_whose_counter_fell_behind_resyncs_once(shared_ks):
    """A copied identity on a new machine starts its counter at 1: the signed
    StaleSequence answer tells it where to go on, and the call goes through."""
    srv, _ = shared_ks
    c = _client(srv.url)
    owner = Identity.generate("o")
    c.register(owner)
    for _ in range(3):
        c.register(owner)  # writes: each claims its number
    fresh = KeyServiceClient(c.pin)  # an empty counter
    assert fresh.register(owner)
    assert fresh.counter.next(owner.principal_id) == 6


def test_concurrent_calls_of_one_principal_all_go_through(shared_ks):
    """The SDK sends one signed call per principal at a time, so its numbers
    arrive in order and none is refused as late."""
    from concurrent.futures import ThreadPoolExecutor

    srv, _ = shared_ks
    c = _client(srv.url)
    owner = Identity.generate("o")
    c.register(owner)
    with ThreadPoolExecutor(8) as pool:
        assert all(isinstance(r, list) for r in pool.map(lambda _: c.audit(owner), range(40)))


def test_only_the_owner_manages_a_model(ks):
    srv, _ = ks
    c = _client(srv.url)
    owner, other, user = Identity.generate("o"), Identity.generate("x"), Identity.generate("u")
    for i in (owner, other, user):
        c.register(i)
    c.publish_model(owner, "m", new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    with pytest.raises(AccessDenied, match="another owner"):
        c.publish_model(other, "m", new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    with pytest.raises(AccessDenied, match="only the owner"):
        c.grant(other, "m", user.principal_id)
    with pytest.raises(NotFound):
        c.grant(owner, "nope", user.principal_id)
    with pytest.raises(NotFound, match="not registered"):
        c.grant(owner, "m", Identity.generate("ghost").principal_id)
    with pytest.raises(FormatError):
        c.grant(owner, "m", "not-a-principal")
    c.grant(owner, "m", user.principal_id)
    assert c.get_model(owner, "m")["grants"] == [user.principal_id]
    with pytest.raises(AuthError, match="unknown principal"):
        c.grant(Identity.generate("unregistered"), "m", user.principal_id)


def test_state_survives_restart_and_pin_holds(tmp_path):
    srv = start_keyservice(tmp_path)
    c = _client(srv.url)
    owner = Identity.generate("o")
    c.register(owner)
    c.publish_model(owner, "m", new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    pin = c.pin
    port = srv.url.rsplit(":", 1)[1]
    srv.stop()
    srv = start_keyservice(tmp_path, port=int(port))
    try:
        c2 = KeyServiceClient(pin)  # the old pin still matches: the service kept its key
        assert c2.get_model(owner, "m")["policy"]["mrenclave"] == [MR]
    finally:
        srv.stop()
    # A different key service (fresh secrets) at the same URL: the pin refuses it.
    srv = start_keyservice(tmp_path / "other", port=int(port))
    try:
        with pytest.raises(IntegrityError, match="signature does not verify"):
            KeyServiceClient(pin).register(Identity.generate("z"))
    finally:
        srv.stop()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/principals", b"{not json"),
    ("POST", "/v1/principals", b'{"public_key": "!!!"}'),
    ("POST", "/v1/principals", b'{"public_key": "AAAA"}'),
    ("POST", "/v1/enclave/attest", b'{"nonce": "zz"}'),
    ("POST", "/v1/enclave/attest", b"[]"),
    ("POST", "/v1/enclave/keys", b"{}"),
    ("GET", "/v1/attestation?nonce=12", b""),
    ("GET", "/v1/nothing-here", b""),
    ("DELETE", "/v1/enclave/nonce", b""),
])
def test_bad_input_gets_4xx_with_reason(ks, method, path, body):
    srv, _ = ks
    r = requests.request(method, srv.url + path, data=body, timeout=5)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.json()["error"]


def test_oversized_body_refused(ks):
    srv, _ = ks
    r = requests.post(srv.url + "/v1/enclave/attest", data=b"x" * (2 << 20), timeout=10)
    assert r.status_code == 413


def test_enclave_token_required_and_checked(ks):
    srv, _ = ks
    r = requests.post(srv.url + "/v1/enclave/keys", json={"model_id": "m"}, timeout=5)
    assert r.status_code == 401
    r = requests.post(srv.url + "/v1/enclave/keys", json={"model_id": "m"},
                      headers={"Authorization": "Bearer " + "00" * 32}, timeout=5)
    assert r.status_code == 401 and "attest again" in r.json()["error"]


class _HoldingProxy:
    """A loopback TCP proxy that holds the bytes of its first connection from
    the client until `release` is set: the network withholding one call."""

    def __init__(self, upstream: str) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit

        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.release = threading.Event()
        self.held = threading.Event()  # the first connection's request has arrived
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._first = True
        self._socks: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream, timeout=10)
            self._socks += [conn, up]
            first, self._first = self._first, False
            threading.Thread(target=self._pump, args=(conn, up, first), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()

    def _pump(self, src, dst, hold: bool) -> None:
        try:
            while data := src.recv(65536):
                if hold:
                    self.held.set()
                    self.release.wait(20)
                    hold = False
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for s in self._socks:
            s.close()


def test_a_withheld_grant_is_not_resent_after_another_process_revoke(shared_ks, tmp_path):
    """Two `sesemi` processes of one owner share $SESEMI_HOME: the first sends a
    grant, which the network holds; the second revokes. Delivered late, the
    grant must not take effect after the revoke (a resend above last_seq would
    do just that); so a second process waits until the first call is answered."""
    import dataclasses
    import threading

    from sesemi.call_seq import FileCallCounter

    srv, _ = shared_ks
    pin = attest_key_service(srv.url, insecure_sim=True)
    owner, user = Identity.generate("o"), Identity.generate("u")
    setup = KeyServiceClient(pin, counter=FileCallCounter(tmp_path / "call_seq"))
    setup.register(owner)
    setup.register(user)
    setup.publish_model(owner, "m-withheld", new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    proxy = _HoldingProxy(srv.url)
    try:
        first = KeyServiceClient(dataclasses.replace(pin, url=proxy.url), Timeouts(5, 30),
                                 counter=FileCallCounter(tmp_path / "call_seq"))
        second = KeyServiceClient(pin, Timeouts(5, 30), counter=FileCallCounter(tmp_path / "call_seq"))
        granting = threading.Thread(target=lambda: first.grant(owner, "m-withheld", user.principal_id))
        granting.start()
        assert proxy.held.wait(10)
        revoking = threading.Thread(target=lambda: second.revoke(owner, "m-withheld", user.principal_id))
        revoking.start()
        revoking.join(1.0)  # before the fix: the revoke completes here, ahead of the held grant
        proxy.release.set()
        granting.join(30)
        revoking.join(30)
        assert not granting.is_alive() and not revoking.is_alive()
        assert setup.get_model(owner, "m-withheld")["grants"] == []
    finally:
        proxy.release.set()
        proxy.close()
