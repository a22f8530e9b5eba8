"""The key service's DCAP path through its API layer, with the fixture's
collateral from a file and an injected clock.

The fixture quote's REPORT_DATA is fixed ("Hello, world!"), so it can never
bind a nonce the service has just issued: an end-to-end accept through the
RCAR nonce flow is impossible with it. The service is therefore layered as
evidence -> claims (`evidence_claims`), the binding check (`check_binding`),
a session for the claims (`open_session`), and the model's policy at key
release; the API tests below show that the quote passes verification and is
then stopped by the binding, and the session tests show the policy path that
verified DCAP claims take when keys are released through the API.
"""

from __future__ import annotations

import os

import pytest

from keyservice import KeyService, KeyServiceConfig, create_app
from sesemi import hpke_box
from sesemi.attestation.dcap import evidence_for_quote
from sesemi.encoding import b64d, b64e
from sesemi.errors import AttestationError
from sesemi.identity import Identity

from . import dcap_fixture as fx

SEAL = "5e" * 16
ALLOWING = {"mrenclave": [fx.MRENCLAVE], "tcb_statuses": ["UpToDate", fx.STATUS],
            "advisory_allowlist": list(fx.ADVISORIES)}


def make_ks(tmp_path, at: float = fx.INSIDE, **cfg) -> KeyService:
    tmp_path.mkdir(parents=True, exist_ok=True)
    collateral = tmp_path / "collateral.json"
    collateral.write_bytes(fx.collateral_json())
    # A key service built in the fixture's time (its floor is never below its build date).
    config = KeyServiceConfig(db_path=tmp_path / "ks.db", collateral_file=collateral,
                              **{"build_date": fx.WINDOW_START, **cfg})
    return KeyService(config, clock=fx.clock(at))


def attest_via_api(ks: KeyService, quote: bytes):
    client = create_app(ks).test_client()
    nonce = client.post("/v1/enclave/nonce").get_json()["nonce"]
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    return client.post("/v1/enclave/attest", json={"nonce": nonce, "evidence": evidence_for_quote(quote),
                                                   "public_key": b64e(pub)})


def attest_refusals(ks: KeyService) -> list[str]:
    ks.maintenance()  # anonymous refusals are counted, then written once per window
    return [r["reason"] for r in ks.store._all("SELECT reason FROM audit WHERE event='attest' AND outcome='refused'")]


def test_api_verifies_the_quote_then_refuses_the_unbound_report_data(tmp_path):
    ks = make_ks(tmp_path)
    assert create_app(ks).test_client().get("/healthz").get_json()["accepts_dcap_evidence"] is True
    resp = attest_via_api(ks, fx.quote())
    body = resp.get_json()
    assert resp.status_code == 403 and body["kind"] == "AttestationError"
    assert body["check"] == "report_data"  # the quote itself verified: it is the binding that fails
    assert attest_refusals(ks)[0].startswith("report_data: report_data does not bind this nonce and public key")


@pytest.mark.parametrize("at,check", [(fx.WINDOW_START - 1, "clock_behind_floor"),
                                      (fx.WINDOW_END + 1, "collateral_validity")])
def test_api_refuses_outside_the_collateral_window(tmp_path, at, check):
    # Before the window the built-in floor (the fixture's issueDate) refuses the clock itself.
    ks = make_ks(tmp_path, at=at)
    resp = attest_via_api(ks, fx.quote())
    assert resp.status_code == 403 and resp.get_json()["check"] == check
    assert attest_refusals(ks)[0].startswith(check + ": ")


def test_clock_set_back_into_the_window_after_later_collateral_refuses_the_expired_quote(tmp_path):
    """The host sets the key service's clock back into the fixture's validity
    window after the service has verified later collateral: the expired quote
    is refused (it verified on the old code, and a model key was released).

    The fixture is the only Intel-signed collateral here, so "later collateral"
    is the persisted floor that verifying it leaves: `raise_mark`, the call a
    verified quote makes (as the first half shows with the fixture itself)."""
    from sesemi.attestation.dcap import FLOOR_MARK

    from sesemi.attestation.dcap import TIME_FLOOR_SEED

    ks = make_ks(tmp_path, at=fx.INSIDE)
    assert ks.store.mark(FLOOR_MARK) == TIME_FLOOR_SEED  # seeded at first start, from the code
    ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ks.store.mark(FLOOR_MARK) == fx.WINDOW_START  # raised by the fixture's own signed dates
    later = fx.WINDOW_END + 30 * 86400
    ks.store.raise_mark(FLOOR_MARK, later)               # a month later: newer collateral verified
    _publish(ks, "m", ALLOWING)

    ks = make_ks(tmp_path, at=fx.INSIDE)                 # restarted, clock set back into the window
    assert ks.store.mark(FLOOR_MARK) == later            # the floor survived the restart
    resp = attest_via_api(ks, fx.quote())
    assert resp.status_code == 403 and resp.get_json()["check"] == "clock_behind_floor"
    assert attest_refusals(ks)[-1].startswith("clock_behind_floor: the clock (2025-07-01T12:00:00Z) is behind")
    with pytest.raises(AttestationError) as ei:         # no claims, so no session and no key
        ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ei.value.check == "clock_behind_floor"
    assert ks.store.mark(FLOOR_MARK) == later


def test_tcb_evaluation_numbers_persist_and_a_configured_minimum_refuses(tmp_path):
    ks = make_ks(tmp_path)
    ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ks.store.mark("dcap/tcb_eval/00A067110000") == 17
    ks.store.raise_mark("dcap/tcb_eval/00A067110000", 18)  # newer TCB info verified earlier
    ks = make_ks(tmp_path)
    with pytest.raises(AttestationError) as ei:
        ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ei.value.check == "tcb_eval_rollback"
    ks = make_ks(tmp_path / "fresh", min_tcb_eval=18)
    with pytest.raises(AttestationError) as ei:
        ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ei.value.check == "tcb_eval_min"


def test_api_refuses_a_tampered_quote(tmp_path):
    ks = make_ks(tmp_path)
    forged = bytearray(fx.quote())
    forged[48 + 64] ^= 0x01  # a byte of MRENCLAVE
    resp = attest_via_api(ks, bytes(forged))
    assert resp.status_code == 403 and resp.get_json()["check"] == "quote"
    assert attest_refusals(ks)[0].startswith("quote: DCAP quote does not verify")


def test_api_refuses_dcap_evidence_without_a_collateral_source(tmp_path):
    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db"), clock=fx.clock(fx.INSIDE))
    resp = attest_via_api(ks, fx.quote())
    assert resp.status_code == 403 and resp.get_json()["check"] == "collateral"


def _publish(ks: KeyService, model_id: str, policy: dict) -> bytes:
    owner = Identity.generate("owner")
    pid = ks.register_principal(owner.public_raw)
    key = os.urandom(32)
    wrapped = hpke_box.seal(key, ks.hpke_public, hpke_box.info("model-key", model_id, pid, SEAL))
    ks.put_model(pid, model_id, {"policy": policy, "wrapped_key": b64e(wrapped), "seal_id": SEAL})
    return key


def test_verified_dcap_claims_get_keys_only_under_an_allowing_policy(tmp_path):
    ks = make_ks(tmp_path)
    allowed_key = _publish(ks, "allowing", ALLOWING)
    _publish(ks, "default-tcb", {"mrenclave": [fx.MRENCLAVE]})
    _publish(ks, "denylisted", {**ALLOWING, "advisory_denylist": ["INTEL-SA-00289"]})
    _publish(ks, "unlisted", {**ALLOWING, "advisory_allowlist": ["INTEL-SA-00289"]})

    claims = ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert (claims.tee, claims.tcb_status, claims.advisory_ids) == ("sgx", fx.STATUS, fx.ADVISORIES)
    private = hpke_box.new_private_key()
    session = ks.open_session(claims, hpke_box.public_raw(private))
    assert session["insecure_simulation"] is False

    client = create_app(ks).test_client()
    auth = {"Authorization": f"Bearer {session['token']}"}
    ok = client.post("/v1/enclave/keys", json={"model_id": "allowing", "seal_id": SEAL}, headers=auth)
    assert ok.status_code == 200
    got = hpke_box.open_(b64d(ok.get_json()["model_key"]), private, hpke_box.info("release-model-key", "allowing", SEAL))
    assert got == allowed_key

    for model_id, check in (("default-tcb", "tcb_status"), ("denylisted", "advisory_denylist"),
                            ("unlisted", "advisory_allowlist")):
        resp = client.post("/v1/enclave/keys", json={"model_id": model_id, "seal_id": SEAL}, headers=auth)
        assert resp.status_code == 403 and resp.get_json()["check"] == check
        assert "model_key" not in resp.get_json()
    reasons = [r["reason"] for r in ks.store._all("SELECT reason FROM audit WHERE event='release' ORDER BY seq")]
    assert reasons == ["model_key", "policy:tcb_status", "policy:advisory_denylist", "policy:advisory_allowlist"]


def test_hardware_key_service_refuses_the_insecure_sim_flag(tmp_path):
    from sesemi.errors import FormatError

    with pytest.raises(FormatError, match="insecure-sim-attestation"):
        KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", tee="occlum", insecure_sim_attestation=True))
    assert not (tmp_path / "ks.db").exists()


def test_the_model_key_is_released_only_for_the_published_seal(tmp_path):
    ks = make_ks(tmp_path)
    key = _publish(ks, "allowing", ALLOWING)
    claims = ks.evidence_claims(evidence_for_quote(fx.quote()))
    private = hpke_box.new_private_key()
    auth = {"Authorization": f"Bearer {ks.open_session(claims, hpke_box.public_raw(private))['token']}"}
    client = create_app(ks).test_client()
    other = client.post("/v1/enclave/keys", json={"model_id": "allowing", "seal_id": "00" * 16}, headers=auth)
    assert other.status_code == 403 and "model_key" not in other.get_json()
    missing = client.post("/v1/enclave/keys", json={"model_id": "allowing"}, headers=auth)
    assert missing.status_code == 400 and "seal_id" in missing.get_json()["error"]
    ok = client.post("/v1/enclave/keys", json={"model_id": "allowing", "seal_id": SEAL}, headers=auth)
    box = b64d(ok.get_json()["model_key"])
    assert hpke_box.open_(box, private, hpke_box.info("release-model-key", "allowing", SEAL)) == key
    with pytest.raises(Exception):  # bound to the seal id: it opens in no other seal's context
        hpke_box.open_(box, private, hpke_box.info("release-model-key", "allowing", "00" * 16))
    reasons = [r["reason"] for r in ks.store._all("SELECT reason FROM audit WHERE event='release' ORDER BY seq")]
    assert reasons == ["seal_id", "model_key"]
