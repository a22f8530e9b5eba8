"""The encrypted inference flow end to end: key service and action as processes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from sesemi import answer, envelope, tensors
from sesemi.client import ActionClient, EnclaveKeyClient
from sesemi.encoding import json_dumps
from sesemi.identity import Identity
from sesemi.errors import AccessDenied, FormatError, IntegrityError, ModelUnavailable, NotFound, PolicyError, ReplayError

from app.runtime import NOT_AUTHORISED

from ..conftest import DIGITS, plaintext_outputs


def _log(r):
    """The log fields of an answer that its signature covers."""
    from sesemi.ks_state import LogAnswer

    a = LogAnswer.from_headers(r.headers)
    return a.note, a.proof_from, a.proof


def test_full_flow_matches_plaintext(world, action, heldout):
    x, y = heldout
    res = ActionClient(action.url).infer("digits", world.user.principal_id, world.request_key, {"image": x[:50]})
    ref = plaintext_outputs(x[:50])
    assert set(res.outputs) == set(ref)
    for name in ref:
        np.testing.assert_array_equal(res.outputs[name], ref[name])
    assert res.insecure_simulation is True and res.tee == "sim"
    acc = (next(iter(res.outputs.values())).argmax(1) == y[:50]).mean()
    assert acc > 0.9


def test_init_over_http_once_with_value_env(world):
    """As OpenWhisk does it: start bare, POST /init with value.env, then /run."""
    srv = world.action(init=False)
    r = requests.post(srv.url + "/run", json={"value": {}}, timeout=10)
    # As the reference action proxy answers /run before /init: 502, never 503.
    assert r.status_code == 502 and "not initialised" in r.json()["error"]["message"]
    env = {"SESEMI_PACK": str(world.pack), "SESEMI_KS_URL": world.ks_server.url}
    # The platform may not set what the measurement is about (here: stretch the revocation bound).
    r = requests.post(srv.url + "/init", json={"value": {"env": {**env, "SESEMI_KEY_TTL": "86400"}}}, timeout=30)
    assert r.status_code == 403 and "SESEMI_KEY_TTL" in r.json()["error"]["message"]
    r = requests.post(srv.url + "/init", json={"value": {"name": "a", "main": "main", "code": "", "env": env}},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["insecure_simulation"] is True
    assert r.json()["mrenclave"] == world.mrenclave(world.pack)
    r = requests.post(srv.url + "/init", json={"value": {"env": env}}, timeout=10)
    assert r.status_code == 403 and "more than once" in r.json()["error"]["message"]
    x = np.zeros((1, 8, 8, 1), np.float32)
    res = ActionClient(srv.url).infer("digits", world.user.principal_id, world.request_key, {"image": x})
    assert res.outputs


def test_ungranted_user_refused(world, action):
    stranger = world.new_user("stranger")
    with pytest.raises(AccessDenied, match="not granted"):
        world.enroll(stranger, "digits")
    # Even with a key of its own making, the action cannot get a request key for it.
    with pytest.raises(AccessDenied, match="not authorised for this model, or no request key"):
        ActionClient(action.url).infer("digits", stranger.principal_id, envelope.new_request_key(),
                                       {"image": np.zeros((1, 8, 8, 1), np.float32)})
    # Users learn their own standing from the key service, signed; nobody else's.
    assert world.ks.user_status(stranger) == {"user_id": stranger.principal_id, "models": []}
    assert {"model_id": "digits", "granted": True, "request_key": True} in world.ks.user_status(world.user)["models"]
    with pytest.raises(AccessDenied, match="that user only"):
        world.ks._signed(stranger, "GET", f"/v1/users/{world.user.principal_id}/status", "user status")


def test_junk_runs_for_an_ungranted_user_cost_no_key_service_call(world, action):
    """A flood of /run naming an ungranted user: the model's roster does not
    list them, so the action refuses every one itself (no release asked for,
    no audit row), each with the same answer."""
    stranger = world.new_user("flooder")
    before = [e for e in world.ks.audit(world.owner, "digits") if e.get("user_id") == stranger.principal_id]
    answers = set()
    for _ in range(30):
        with pytest.raises(AccessDenied, match=NOT_AUTHORISED[:40]) as ei:
            ActionClient(action.url).infer("digits", stranger.principal_id, envelope.new_request_key(),
                                           {"image": np.zeros((1, 8, 8, 1), np.float32)})
        answers.add(str(ei.value))
    after = [e for e in world.ks.audit(world.owner, "digits") if e.get("user_id") == stranger.principal_id]
    assert len(after) - len(before) == 0, after
    assert len(answers) == 1


def test_revocation_holds_after_ttl(world):
    ttl = 1.5
    srv = world.action(extra=["--key-ttl", str(ttl)])
    # The TTL is measured: the owner must allow the measurement of this configuration too.
    mr_short = world.mrenclave(world.pack, key_ttl_s=ttl)
    world.publish("digits", world.model_key, world.mrenclave(world.pack), mr_short)
    user = world.new_user("revokee")
    world.ks.grant(world.owner, "digits", user.principal_id)
    rk = world.enroll(user, "digits")
    client = ActionClient(srv.url)
    x = {"image": np.zeros((1, 8, 8, 1), np.float32)}
    client.infer("digits", user.principal_id, rk, x)
    world.ks.revoke(world.owner, "digits", user.principal_id)
    time.sleep(ttl + 0.5)
    with pytest.raises(AccessDenied, match="not authorised for this model"):
        client.infer("digits", user.principal_id, rk, x)
    # Refused by the action's roster (refreshed within the TTL), or by the key
    # service, whose audit log then says why.
    entries = world.ks.audit(world.owner, "digits")
    revoked_at = max(i for i, e in enumerate(entries) if e["event"] == "revoke")  # entries: oldest first
    assert not any(e["event"] == "release" and e["outcome"] == "ok" and e.get("user_id") == user.principal_id
                   for e in entries[revoked_at + 1:])


def _post_run(url: str, value) -> requests.Response:
    return requests.post(url + "/run", data=json_dumps({"value": value}),
                         headers={"Content-Type": "application/json"}, timeout=30)


def test_tampered_and_replayed_requests_refused(world, action):
    x = np.zeros((1, 8, 8, 1), np.float32)
    env = envelope.seal(world.request_key, "digits", world.user.principal_id, envelope.new_request_id(),
                        envelope.REQUEST, tensors.encode({"image": x}))
    good = env.to_json()
    ct = bytearray(env.ciphertext)
    ct[3] ^= 1
    bad = envelope.Envelope(**{**env.__dict__, "ciphertext": bytes(ct)}).to_json()
    # Refusals are application errors: 200, and kind and status inside `error`. A
    # request that does not authenticate under a granted user's key gets exactly
    # the answer of an ungranted user (issue 13 item 12).
    r = _post_run(action.url, bad)
    assert r.status_code == 200 and set(r.json()) == {"error"}
    assert r.json()["error"] == {"kind": "AccessDenied", "status": 403, "message": NOT_AUTHORISED}
    moved = {**good, "request_id": "another-request"}
    assert _post_run(action.url, moved).json()["error"]["message"] == NOT_AUTHORISED
    nobody = envelope.seal(envelope.new_request_key(), "digits", Identity.generate("x").principal_id,
                           envelope.new_request_id(),
                           envelope.REQUEST, b"x").to_json()
    assert _post_run(action.url, nobody).json() == r.json()
    assert "error" not in _post_run(action.url, good).json()
    r = _post_run(action.url, good)
    assert r.json()["error"]["status"] == 409 and "replayed" in r.json()["error"]["message"]
    for junk in ({"v": 3}, {"v": 3, "model_id": "nope", "user_id": "u", "request_id": "r",
                            "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": "A" * 24}):
        r = _post_run(action.url, junk)
        assert r.status_code == 200 and 400 <= r.json()["error"]["status"] < 500, r.text
    r = requests.post(action.url + "/run", data=b"{not json", timeout=10)
    assert r.status_code == 200 and "JSON" in r.json()["error"]["message"]


def test_wrong_input_shape_is_a_clear_error(world, action):
    # The reason names the model's input signature: it is sealed for the user, and
    # the platform sees only a status (issue 13 item 13).
    env = envelope.seal(world.request_key, "digits", world.user.principal_id, envelope.new_request_id(),
                        envelope.REQUEST, tensors.encode({"image": np.zeros((1, 9, 8, 1), np.float32)}))
    r = _post_run(action.url, env.to_json())
    err = r.json()["error"]
    assert r.status_code == 200 and err["kind"] == "SealedError" and err["status"] == 400
    assert "shape" not in r.text and "image" not in r.text and "8" not in err["message"]
    opened = answer.decode(envelope.open_(world.request_key, envelope.Envelope.from_json(err["response"]),
                                          envelope.RESPONSE))
    assert opened.error["kind"] == "FormatError" and "shape" in opened.error["message"]
    with pytest.raises(FormatError, match="shape"):
        ActionClient(action.url).infer("digits", world.user.principal_id, world.request_key,
                                       {"image": np.zeros((1, 9, 8, 1), np.float32)})
    with pytest.raises(FormatError, match="dtype"):
        ActionClient(action.url).infer("digits", world.user.principal_id, world.request_key,
                                       {"image": np.zeros((1, 8, 8, 1), np.float64)})


def test_more_bad_input_is_4xx(world, action):
    with pytest.raises(FormatError, match="empty"):
        ActionClient(action.url).infer("digits", world.user.principal_id, world.request_key,
                                       {"image": np.zeros((0, 8, 8, 1), np.float32)})
    with pytest.raises(FormatError, match="dynamic dimension"):
        ActionClient(action.url).infer("digits", world.user.principal_id, world.request_key,
                                       {"image": np.zeros((100_000, 8, 8, 1), np.float32)})
    # a GET with an oversized body is refused like a POST
    import socket

    host, port = action.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n")
        assert b" 413 " in s.recv(1024)
    srv = world.action(init=False)
    r = requests.post(srv.url + "/init", json={"value": {"env": {"SESEMI_PACK": {"not": "a string"}}}}, timeout=10)
    assert r.status_code == 400 and "SESEMI_PACK" in r.json()["error"]["message"]


def test_model_not_in_pack(world, action):
    with pytest.raises(NotFound, match="not in this action's pack"):
        ActionClient(action.url).infer("other", world.user.principal_id, world.request_key,
                                       {"image": np.zeros((1, 8, 8, 1), np.float32)})


def test_tampered_sealed_model_refused(world):
    sealed, key = world.seal("digits-t")
    raw = bytearray(sealed.read_bytes())
    raw[len(raw) // 2] ^= 1
    sealed.write_bytes(bytes(raw))
    pack = world.make_pack("tampered-model", [sealed])  # manifest digests the tampered blob
    world.publish("digits-t", key, world.mrenclave(pack))
    world.ks.grant(world.owner, "digits-t", world.user.principal_id)
    rk = world.enroll(world.user, "digits-t")
    srv = world.action(pack=pack)
    with pytest.raises(ModelUnavailable, match="does not authenticate"):
        ActionClient(srv.url).infer("digits-t", world.user.principal_id, rk,
                                    {"image": np.zeros((1, 8, 8, 1), np.float32)})


def test_an_old_seal_of_a_model_gets_no_key(world):
    """Item 26: the owner re-seals a model under the same key (the SDK allows
    it) and publishes the new seal. A pack holding the old seal gets no model
    key, although the policy allows that very pack's enclave."""
    import shutil

    from sesemi import sealed_model
    from sesemi.errors import SesemiError

    sealed, key = world.seal("digits-s")
    old = world.work / "digits-s-old.sealed"
    shutil.copyfile(sealed, old)
    new = sealed_model.seal_file(DIGITS, sealed, key, "digits-s")  # same key, new seal
    assert new.seal_id != world.seal_ids["digits-s"]
    world.seal_ids["digits-s"] = new.seal_id
    pack = world.make_pack("old-seal", [old])
    world.publish("digits-s", key, world.mrenclave(pack))  # publishes the new seal id
    world.ks.grant(world.owner, "digits-s", world.user.principal_id)
    rk = world.enroll(world.user, "digits-s")
    srv = world.action(pack=pack)
    with pytest.raises(SesemiError):
        ActionClient(srv.url).infer("digits-s", world.user.principal_id, rk,
                                    {"image": np.zeros((1, 8, 8, 1), np.float32)})
    refused = [e["reason"] for e in world.ks.audit(world.owner, "digits-s")
               if e["event"] == "release" and e["outcome"] == "refused"]
    assert refused and set(refused) == {"seal_id"}


def test_tampered_pack_refused(world):
    sealed, key = world.seal("digits-p")
    pack = world.make_pack("tampered-pack", [sealed])
    world.publish("digits-p", key, world.mrenclave(pack))
    world.ks.grant(world.owner, "digits-p", world.user.principal_id)
    rk = world.enroll(world.user, "digits-p")
    raw = bytearray(pack.read_bytes())
    raw[-100] ^= 1  # inside the sealed model, after the manifest was written
    pack.write_bytes(bytes(raw))
    srv = world.action(pack=pack)
    with pytest.raises(ModelUnavailable, match="tampered"):
        ActionClient(srv.url).infer("digits-p", world.user.principal_id, rk,
                                    {"image": np.zeros((1, 8, 8, 1), np.float32)})


def test_mrenclave_outside_policy_refused(world):
    """Same code and pack, but a different measured config (key TTL): not allowed."""
    srv = world.action(extra=["--key-ttl", "7"])
    with pytest.raises(PolicyError, match="mrenclave") as ei:
        ActionClient(srv.url).infer("digits", world.user.principal_id, world.request_key,
                                    {"image": np.zeros((1, 8, 8, 1), np.float32)})
    assert ei.value.check == "mrenclave"
    entries = world.ks.audit(world.owner, "digits")
    assert any(e["event"] == "release" and e["outcome"] == "refused" and e["reason"] == "policy:mrenclave"
               for e in entries)


def test_replayed_attestation_nonce_refused(world):
    from sesemi import hpke_box
    from sesemi.attestation.claims import report_data_binding
    from sesemi.attestation.sim import SimBackend

    client = EnclaveKeyClient(world.ks_server.url)
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = client.nonce()
    evidence = SimBackend(world.mrenclave(world.pack)).evidence(report_data_binding(nonce, pub))
    token, _ = client.attest(nonce, evidence, pub)
    assert token
    with pytest.raises(ReplayError, match="already used"):
        client.attest(nonce, evidence, pub)
    # evidence bound to one key cannot carry another key
    nonce2 = client.nonce()
    from sesemi.errors import AttestationError

    ev2 = SimBackend(world.mrenclave(world.pack)).evidence(report_data_binding(nonce2, pub))
    with pytest.raises(AttestationError, match="report_data"):
        client.attest(nonce2, ev2, hpke_box.public_raw(hpke_box.new_private_key()))


def test_debug_enclave_refused(world):
    sealed, key = world.seal("digits-d")
    pack = world.make_pack("debug", [sealed])
    # The owner allows this measurement, but the enclave claims debug: still refused.
    world.publish("digits-d", key, world.mrenclave(pack, debug=True))
    world.ks.grant(world.owner, "digits-d", world.user.principal_id)
    rk = world.enroll(world.user, "digits-d")
    srv = world.action(pack=pack, env={"SESEMI_INSECURE_SIM_DEBUG": "1"})
    with pytest.raises(PolicyError) as ei:
        ActionClient(srv.url).infer("digits-d", world.user.principal_id, rk,
                                    {"image": np.zeros((1, 8, 8, 1), np.float32)})
    assert ei.value.check == "debug"


def test_keyservice_without_insecure_flag_refuses_sim(tmp_path):
    from ..conftest import make_world

    w = make_world(tmp_path, insecure_sim=False)
    try:
        srv = w.action(init=False)
        env = {"SESEMI_PACK": str(w.pack), "SESEMI_KS_URL": w.ks_server.url}
        r = requests.post(srv.url + "/init", json={"value": {"env": env}}, timeout=30)
        assert r.status_code == 403
        assert "sim evidence refused" in r.json()["error"]["message"]
        assert requests.get(w.ks_server.url + "/healthz", timeout=5).json()["accepts_sim_evidence"] is False
    finally:
        for s in reversed(w.servers):
            s.stop()


def test_pinned_action_refuses_an_impostor_key_service(world, tmp_path):
    """An action pinned to the real key service (SESEMI_KS_KEY, measured) that the
    platform points at another one gets no keys from it: answers must be signed
    by the pinned key over the action's fresh nonce."""
    from bundle_tool.procs import start_keyservice

    impostor = start_keyservice(tmp_path / "impostor")
    try:
        srv = world.action(init=False)
        env = {"SESEMI_PACK": str(world.pack), "SESEMI_KS_URL": impostor.url}
        r = requests.post(srv.url + "/init", json={"value": {"env": env}}, timeout=30)
        assert r.status_code == 400 and "signature does not verify" in r.json()["error"]["message"]
    finally:
        impostor.stop()


def test_key_release_signature_binds_the_callers_nonce(world):
    """A recorded release cannot be replayed: the signature covers the nonce the enclave chose."""
    import secrets as _secrets

    import urllib3

    from sesemi import ks_response
    from sesemi.errors import IntegrityError

    nonce = _secrets.token_hex(16)
    r = urllib3.PoolManager().request("POST", world.ks_server.url + "/v1/enclave/nonce",
                                      headers={ks_response.H_NONCE: nonce})
    key = bytes.fromhex(world.ks.pin.signing_public_key)
    sig = r.headers.get(ks_response.H_SIGNATURE)
    ks_response.verify(key, sig, nonce, "POST", "/v1/enclave/nonce", b"", r.status, r.data, *_log(r))
    with pytest.raises(IntegrityError):
        ks_response.verify(key, sig, _secrets.token_hex(16), "POST", "/v1/enclave/nonce", b"", r.status, r.data, *_log(r))
    with pytest.raises(IntegrityError):
        ks_response.verify(key, sig, nonce, "POST", "/v1/enclave/nonce", b"", r.status, r.data + b" ", *_log(r))


def test_key_service_answer_binds_the_request_body(world):
    """Issue 13 item 25: a proxy that rewrites the enclave's request (its user_id)
    gets a signed answer that the enclave refuses, since it covers the request's hash."""
    import secrets as _secrets

    import urllib3

    from sesemi import ks_response
    from sesemi.encoding import json_dumps
    from sesemi.errors import IntegrityError

    sent = json_dumps({"model_id": "digits", "user_id": world.user.principal_id})
    rewritten = json_dumps({"model_id": "digits", "user_id": world.owner.principal_id})
    nonce = _secrets.token_hex(16)
    r = urllib3.PoolManager().request("POST", world.ks_server.url + "/v1/enclave/keys", body=rewritten,
                                      headers={ks_response.H_NONCE: nonce, "Content-Type": "application/json",
                                               "Authorization": "Bearer " + "00" * 32})
    key = bytes.fromhex(world.ks.pin.signing_public_key)
    sig = r.headers.get(ks_response.H_SIGNATURE)
    ks_response.verify(key, sig, nonce, "POST", "/v1/enclave/keys", rewritten, r.status, r.data, *_log(r))
    with pytest.raises(IntegrityError):
        ks_response.verify(key, sig, nonce, "POST", "/v1/enclave/keys", sent, r.status, r.data, *_log(r))
