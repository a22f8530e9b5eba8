"""Issue 12 §3 property tests of every REST body and header of the key
service and the action, against the real servers over loopback. Each case
gets a JSON answer that is a 4xx with a reason (or, at the action, an error
object; or a success when the input happens to be valid), never a 5xx, a
non-JSON answer or a hang; afterwards the server still serves a valid request."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import numpy as np
import pytest
import urllib3
from hypothesis import example, strategies as st

from sesemi.errors import FormatError
from sesemi import envelope, hpke_box, signed_call, tensors
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.client import ActionClient, EnclaveKeyClient
from sesemi.encoding import b64e, json_dumps

from . import hygiene
from .figures import count, twin
from .test_properties_formats import _signed_sim, json_values

def _dumps(obj) -> bytes:
    """The stdlib's encoder: it also writes integers beyond 64 bits, which orjson will not."""
    return json.dumps(obj).encode()


HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
X = {"image": np.zeros((1, 8, 8, 1), np.float32)}


def _answer(resp: urllib3.BaseHTTPResponse, where: str):
    assert resp.status < 500, f"{where}: HTTP {resp.status}: {resp.data[:300]!r}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), (where, resp.status, resp.data[:200])
    import orjson
    body = orjson.loads(resp.data)
    if resp.status >= 400:
        assert isinstance(body, dict) and body.get("error"), (where, body)
    return body


def _still_serves(w) -> None:
    w.ks.get_model(w.owner, "digits")
    x = np.random.default_rng().random((2, 8, 8, 1), dtype=np.float32)
    res = ActionClient(w.act.url).infer("digits", w.user.principal_id, w.request_key, {"image": x})
    hygiene.remember("endpoint input", x.tobytes())
    hygiene.remember("endpoint output", b"".join(v.tobytes() for v in res.outputs.values()))


# --- key service --------------------------------------------------------------------------------

KS_ROUTES = [("GET", "/healthz"), ("GET", "/v1/attestation"), ("POST", "/v1/principals"),
             ("PUT", "/v1/models/{m}"), ("GET", "/v1/models/{m}"), ("PUT", "/v1/models/{m}/grants/{u}"),
             ("DELETE", "/v1/models/{m}/grants/{u}"), ("PUT", "/v1/models/{m}/request-key"), ("GET", "/v1/audit"),
             ("POST", "/v1/enclave/nonce"), ("POST", "/v1/enclave/attest"), ("POST", "/v1/enclave/keys"),
             ("PATCH", "/v1/models/{m}"), ("GET", "/{m}")]
_segment = st.one_of(st.sampled_from(["digits", "m", "", "..", "%00"]), st.text(max_size=40))
_query = st.dictionaries(st.sampled_from(["nonce", "model_id", "x"]),
                         st.one_of(st.text(max_size=80), st.binary(min_size=16, max_size=64).map(bytes.hex)),
                         max_size=2)
_hval = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)
_headers = st.dictionaries(st.sampled_from(["Authorization", "Content-Type", signed_call.H_PRINCIPAL,
                                            signed_call.H_TIMESTAMP, signed_call.H_SEQ, signed_call.H_VERSION, signed_call.H_NONCE, signed_call.H_SIGNATURE,
                                            "X-Sesemi-Nonce", "Accept"]), _hval, max_size=4)
_body_fields = st.dictionaries(st.sampled_from(["public_key", "wrapped_key", "policy", "nonce", "evidence",
                                                "model_id", "user_id", "model_key", "x"]), json_values, max_size=5)
_bodies = st.one_of(st.binary(max_size=200), json_values.map(_dumps), _body_fields.map(_dumps))


_tokens = st.one_of(st.none(), st.just("valid"), st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=70),
                    st.binary(min_size=0, max_size=40).map(bytes.hex))


def _valid_token(w) -> str:
    """An attestation token the key service really issued (sim enclave of the pack's measurement)."""
    if not getattr(w, "token", None):
        client = EnclaveKeyClient(w.ks_server.url)
        pub = hpke_box.public_raw(hpke_box.new_private_key())
        nonce = client.nonce()
        w.token, _ = client.attest(nonce, SimBackend(w.mrenclave(w.pack)).evidence(report_data_binding(nonce, pub)),
                                   pub)
    return w.token


def _ks_request(w, route, m, u, query, headers, body, signed, token=None):
    method, tmpl = route
    if token is not None:  # tokens: garbage, or a real one with a bad body behind it
        headers = {**headers, "Authorization": "Bearer " + (_valid_token(w) if token == "valid" else token)}
    path = tmpl.format(m=quote(m, safe=""), u=quote(u, safe=""))
    if query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    if signed:  # a valid signature over a bad body: the parsers behind authentication get the input
        try:
            headers = {**headers, **signed_call.sign(w.owner, method, path, w.ks.pin.audience, body,
                                                     time.time(), w.ks.counter.next(w.owner.principal_id))}
        except FormatError:  # a target the SDK will not sign (not canonical): sent unsigned
            pass
    count("property cases: key-service REST")
    resp = HTTP.request(method, w.ks_server.url + path, body=body, headers=headers)
    _answer(resp, f"{method} {path}")


@twin(st.sampled_from(KS_ROUTES), _segment, _segment, _query, _headers, _bodies, st.booleans(), fast=50, soak=3000)
def _ks_rest(w, route, m, u, query, headers, body, signed):
    _ks_request(w, route, m, u, query, headers, body, signed)


@twin(_tokens, _bodies, st.sampled_from(["digits", "nope", ""]), fast=40, soak=1000)
def _ks_tokens(w, token, body, model):
    """The bearer token and the key-release body: a release refused, never a 500."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and model:
        body = _dumps({"model_id": model, **doc})
    _ks_request(w, ("POST", "/v1/enclave/keys"), "", "", {}, {"Content-Type": "application/json"}, body, False,
                token)


def test_keyservice_tokens(w):
    _ks_tokens[0](w)
    _still_serves(w)


@pytest.mark.soak
def test_keyservice_tokens_soak(w):
    _ks_tokens[1](w)
    _still_serves(w)


def test_keyservice_rest(w):
    _ks_rest[0](w)
    _still_serves(w)


@pytest.mark.soak
def test_keyservice_rest_soak(w):
    _ks_rest[1](w)
    _still_serves(w)


def _attest_with_claims(w, claims: dict) -> urllib3.BaseHTTPResponse:
    """Sim evidence with claims of our choosing, correctly bound to a fresh nonce."""
    client = EnclaveKeyClient(w.ks_server.url)
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = client.nonce()
    good = SimBackend("ab" * 32)
    body = {"mrenclave": good.mrenclave, "mrsigner": good.mrsigner, "isv_prod_id": 1, "isv_svn": 1,
            "debug": False, "issued_at": int(time.time()), **claims,
            "report_data": report_data_binding(nonce, pub).hex()}
    ev = _signed_sim(body)
    return HTTP.request("POST", w.ks_server.url + "/v1/enclave/attest",
                        body=json_dumps({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)}),
                        headers={"Content-Type": "application/json"})


_claims = st.dictionaries(st.sampled_from(["mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug"]),
                          st.one_of(json_values, st.integers(-(1 << 70), 1 << 70)), max_size=3)


@twin(_claims, fast=25, soak=500)
@example({"isv_prod_id": 1 << 64})
def _ks_claims(w, claims):
    count("property cases: key-service REST")
    _answer(_attest_with_claims(w, claims), "attest")


def test_keyservice_attest_claims(w):
    _ks_claims[0](w)


# --- action -------------------------------------------------------------------------------------

def _envelope_variants(w):
    rk = w.request_key
    good = envelope.seal(rk, "digits", w.user.principal_id, "r" * 32, envelope.REQUEST, tensors.encode(X))
    base = good.to_json()
    plain = st.one_of(st.binary(max_size=300),
                      st.builds(lambda d: tensors.encode({"image": d}),
                                st.sampled_from([np.zeros((2, 8, 8, 1), np.float32), np.zeros((1, 9, 8, 1),
                                                 np.float32), np.zeros((1, 8, 8, 1), np.int8),
                                                 np.zeros((0, 8, 8, 1), np.float32), np.zeros((1,), np.float64)])))
    # A well-formed envelope for the wrong user, model or bytes: the AEAD path and the inference path.
    sealed = st.tuples(st.sampled_from(["digits", "nope"]), st.sampled_from([w.user.principal_id, "u" * 64]),
                       plain).map(lambda t: envelope.seal(rk, t[0], t[1], envelope.new_request_id(),
                                                          envelope.REQUEST, t[2]).to_json())
    fields = st.tuples(st.sampled_from(sorted(base) + ["extra"]), json_values).map(lambda kv: {**base, kv[0]: kv[1]})
    return st.one_of(json_values, fields, sealed)


def _action_request(w, method, path, value, raw, ctype):
    body = raw if raw is not None else _dumps({"value": value})
    count("property cases: action REST")
    resp = HTTP.request(method, w.act.url + path, body=body, headers={"Content-Type": ctype})
    ans = _answer(resp, f"action {method} {path}")
    if resp.status == 200 and path == "/run":
        assert isinstance(ans, dict) and ("response" in ans or "error" in ans), ans


def _action_prop(w):
    @twin(st.sampled_from([("POST", "/run"), ("POST", "/run"), ("POST", "/run"), ("POST", "/init"),
                           ("GET", "/stats"), ("POST", "/x"), ("GET", "/run")]),
          _envelope_variants(w), st.one_of(st.none(), st.binary(max_size=200)),
          st.sampled_from(["application/json", "text/plain", ""]), fast=50, soak=3000)
    def prop(route, value, raw, ctype):
        _action_request(w, route[0], route[1], value, raw, ctype)

    return prop


def test_action_rest(w):
    _action_prop(w)[0]()
    _still_serves(w)


@pytest.mark.soak
def test_action_rest_soak(w):
    _action_prop(w)[1]()
    _still_serves(w)
