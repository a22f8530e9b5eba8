"""sgx-dcap evidence: dcap-qvl verification of the real fixture quote, the one
policy path over its claims, the REPORT_DATA binding, and collateral sources."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from sesemi import hpke_box
from sesemi.attestation import EvidenceVerifier, check_binding, report_data_binding
from sesemi.attestation import dcap
from sesemi.attestation.dcap import (DcapVerifier, FileCollateral, PccsCollateral, collateral_next_update,
                                     evidence_for_quote, normalise_pccs_url, parse_collateral, pccs_url_from_qcnl)
from sesemi.errors import AttestationError, FormatError, PolicyError, UnavailableError
from sesemi.policy import EnclavePolicy

from . import dcap_fixture as fx


class Fixed:
    """A collateral source that is just the fixture's collateral."""

    def __init__(self) -> None:
        self.collateral = parse_collateral(fx.collateral_json())

    def get(self, quote: bytes, now: float):
        return self.collateral


def verifier(at: float = fx.INSIDE) -> DcapVerifier:
    return DcapVerifier(Fixed(), clock=fx.clock(at))


@pytest.fixture(scope="module")
def claims():
    return verifier().verify_quote(fx.quote())


def test_fixture_verifies_with_its_status_and_advisories(claims):
    assert claims.tee == "sgx" and not claims.simulated
    assert claims.mrenclave == fx.MRENCLAVE and claims.mrsigner == fx.MRSIGNER
    assert claims.tcb_status == fx.STATUS
    assert claims.advisory_ids == fx.ADVISORIES
    assert (claims.isv_prod_id, claims.isv_svn, claims.debug) == (0, 0, False)
    assert bytes.fromhex(claims.report_data).rstrip(b"\0") == b"Hello, world!"


def test_accepted_under_a_policy_allowing_its_status_and_mrenclave(claims):
    EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=("UpToDate", fx.STATUS)).check(claims)
    EnclavePolicy.from_json({"mrsigner": [fx.MRSIGNER], "isv_prod_id": 0, "min_isv_svn": 0,
                             "tcb_statuses": ["UpToDate", "SWHardeningNeeded", fx.STATUS],
                             "advisory_denylist": ["INTEL-SA-00334"]}).check(claims)


@pytest.mark.parametrize("policy,check", [
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,)), "tcb_status"),  # the default: UpToDate only
    (EnclavePolicy(mrenclave=("00" * 32,), tcb_statuses=(fx.STATUS,)), "mrenclave"),
    (EnclavePolicy(mrsigner=("00" * 32,), tcb_statuses=(fx.STATUS,)), "mrsigner"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), isv_prod_id=1, tcb_statuses=(fx.STATUS,)), "isv_prod_id"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), min_isv_svn=1, tcb_statuses=(fx.STATUS,)), "min_isv_svn"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=(fx.STATUS,), advisory_denylist=("INTEL-SA-00615",)),
     "advisory_denylist"),
])
def test_refused_by_policy_naming_the_check(claims, policy, check):
    with pytest.raises(PolicyError) as ei:
        policy.check(claims)
    assert ei.value.check == check


def test_debug_enclave_refused_unless_allowed(claims):
    dbg = dataclasses.replace(claims, debug=True)
    policy = EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=(fx.STATUS,))
    with pytest.raises(PolicyError) as ei:
        policy.check(dbg)
    assert ei.value.check == "debug"
    dataclasses.replace(policy, allow_debug=True).check(dbg)


def test_debug_attribute_is_read_from_the_verified_report(monkeypatch):
    # Setting the DEBUG flag in a real quote breaks its signature, so feed the
    # parser dcap-qvl's own verified report with ATTRIBUTES.flags |= DEBUG.
    import dcap_qvl

    real = json.loads(dcap_qvl.verify(fx.quote(), Fixed().collateral, int(fx.INSIDE)).to_json())
    real["report"]["SgxEnclave"]["attributes"] = "07" + real["report"]["SgxEnclave"]["attributes"][2:]

    class Report:
        def to_json(self) -> str:
            return json.dumps(real)

    class Qvl:
        @staticmethod
        def verify(quote, collateral, now):
            return Report()

    v = verifier()
    monkeypatch.setattr(dcap, "_qvl", lambda: Qvl)
    assert v.verify_quote(fx.quote()).debug is True


def test_every_byte_of_the_signed_report_body_matters():
    v, q = verifier(), fx.quote()
    assert dcap.REPORT_BODY.stop - dcap.REPORT_BODY.start == 384
    refused = 0
    for i in range(dcap.REPORT_BODY.start, dcap.REPORT_BODY.stop):
        forged = bytearray(q)
        forged[i] ^= 0x01
        with pytest.raises(AttestationError) as ei:
            v.verify_quote(bytes(forged))
        assert ei.value.check == "quote"
        refused += 1
    assert refused == 384


@pytest.mark.parametrize("at,ok", [
    (fx.WINDOW_START - 1, False), (fx.WINDOW_START, True), (fx.WINDOW_END, True), (fx.WINDOW_END + 1, False),
    (fx.ts("2030-01-01T00:00:00Z"), False),
])
def test_collateral_validity_window(at, ok):
    if ok:
        assert verifier(at).verify_quote(fx.quote()).tcb_status == fx.STATUS
    else:
        with pytest.raises(AttestationError) as ei:
            verifier(at).verify_quote(fx.quote())
        assert ei.value.check == "collateral_validity"


def test_report_data_must_bind_nonce_and_key(claims):
    nonce, pub = os.urandom(32), hpke_box.public_raw(hpke_box.new_private_key())
    ev = EvidenceVerifier(dcap_verifier=verifier())
    assert ev.claims(evidence_for_quote(fx.quote())) == claims
    with pytest.raises(AttestationError) as ei:
        ev.verify(evidence_for_quote(fx.quote()), nonce=nonce, public_key=pub)
    assert ei.value.check == "report_data"
    # The same check passes when REPORT_DATA is the binding, and only for that (nonce, key).
    bound = dataclasses.replace(claims, report_data=report_data_binding(nonce, pub).hex())
    check_binding(bound, nonce, pub)
    for other_nonce, other_pub in ((os.urandom(32), pub), (nonce, hpke_box.public_raw(hpke_box.new_private_key()))):
        with pytest.raises(AttestationError):
            check_binding(bound, other_nonce, other_pub)


def test_evidence_shape_and_configuration():
    ev = evidence_for_quote(fx.quote())
    assert set(ev) == {"type", "quote"} and ev["type"] == "sgx-dcap"
    with pytest.raises(AttestationError) as ei:  # no collateral source: refused, said why
        EvidenceVerifier(allow_sim=True).claims(ev)
    assert ei.value.check == "collateral"
    with pytest.raises(AttestationError):
        EvidenceVerifier(dcap_verifier=verifier()).claims({"type": "sgx-dcap", "quote": "AAAA"})
    with pytest.raises(FormatError):
        EvidenceVerifier(dcap_verifier=verifier()).claims({"type": "sgx-dcap", "quote": "not base64!"})
    with pytest.raises(AttestationError) as ei:
        EvidenceVerifier(dcap_verifier=verifier()).claims({"type": "sgx-dcap", "quote": ev["quote"][:400]})
    assert ei.value.check == "quote"


# --- collateral sources ------------------------------------------------------

def test_next_update_is_the_earliest_part():
    assert collateral_next_update(parse_collateral(fx.collateral_json())) == fx.WINDOW_END


class FakePccs:
    """Like dcap_qvl.get_collateral, which attaches the PCK chain of the quote
    it fetched for; here another platform's (any other chain will do)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    def __call__(self, url: str, quote: bytes):
        self.calls.append(url)
        if self.fail:
            raise ValueError("connection refused")
        doc = json.loads(fx.collateral_json())
        doc["pck_certificate_chain"] = doc["tcb_info_issuer_chain"]
        return parse_collateral(json.dumps(doc))


def test_pccs_collateral_is_cached_and_refreshed_before_next_update():
    fetch = FakePccs()
    src = PccsCollateral("https://pccs.example:8081/sgx/certification/v4/", refresh_margin_s=3600, retry_s=300,
                         fetch=fetch)
    q = fx.quote()
    v = DcapVerifier(src, clock=fx.clock(fx.INSIDE))
    assert v.verify_quote(q).tcb_status == fx.STATUS  # the quote's own PCK chain, not the fetched one
    src.get(q, fx.INSIDE + 60)
    assert fetch.calls == ["https://pccs.example:8081"]  # normalised, fetched once
    src.get(q, fx.WINDOW_END - 3600 - 1)
    assert len(fetch.calls) == 1
    src.get(q, fx.WINDOW_END - 3600)  # inside the margin: refresh
    assert len(fetch.calls) == 2
    # A failing PCCS: the cache serves until the collateral really expires, retried at most every retry_s.
    fetch.fail = True
    t = fx.WINDOW_END - 3000
    assert src.get(q, t) is not None and len(fetch.calls) == 3
    src.get(q, t + 10)
    assert len(fetch.calls) == 3
    src.get(q, t + 301)
    assert len(fetch.calls) == 4
    with pytest.raises(UnavailableError, match="PCCS"):
        src.get(q, fx.WINDOW_END + 1)


def test_file_collateral(tmp_path):
    path = tmp_path / "collateral.json"
    doc = json.loads(fx.collateral_json())
    doc["pck_certificate_chain"] = doc["tcb_info_issuer_chain"]  # saved from another platform's fetch
    path.write_text(json.dumps(doc))
    src = FileCollateral(path)
    assert DcapVerifier(src, clock=fx.clock(fx.INSIDE)).verify_quote(fx.quote()).mrenclave == fx.MRENCLAVE
    path.write_text("{}")
    os.utime(path, (1, 1))  # a new mtime: re-read, and a broken file is an error, not stale trust
    with pytest.raises(FormatError):
        src.get(fx.quote(), fx.INSIDE)
    with pytest.raises(UnavailableError):
        FileCollateral(tmp_path / "missing.json")
    with pytest.raises(FormatError):
        FileCollateral(path)


@pytest.mark.parametrize("url,base", [
    ("https://pccs.local:8081", "https://pccs.local:8081"),
    ("https://pccs.local:8081/", "https://pccs.local:8081"),
    ("https://pccs.local:8081/sgx/certification/v4/", "https://pccs.local:8081"),
    ("https://pccs.local:8081/sgx/certification/v3", "https://pccs.local:8081"),
    ("https://api.example/tdx/certification/v4", "https://api.example"),
])
def test_pccs_url_forms(url, base):
    assert normalise_pccs_url(url) == base


def test_pccs_url_rejects_nonsense():
    with pytest.raises(FormatError):
        normalise_pccs_url("pccs.local:8081")


def test_pccs_url_from_qcnl_conf(tmp_path):
    conf = tmp_path / "sgx_default_qcnl.conf"
    conf.write_text('{\n  // PCCS server address\n  "pccs_url": "https://localhost:8081/sgx/certification/v4/"\n'
                    '  // To accept insecure HTTPS certificate, set this option to false\n'
                    '  ,"use_secure_cert": false\n}\n')
    assert pccs_url_from_qcnl(conf) == "https://localhost:8081/sgx/certification/v4/"
    conf.write_text(json.dumps({"pccs_url": "https://a:8081/", "collateral_service": "https://b/sgx/certification/v4/"}))
    assert pccs_url_from_qcnl(conf) == "https://b/sgx/certification/v4/"
    conf.write_text("# PCCS server address\nPCCS_URL=https://localhost:8081/sgx/certification/v3/\n"
                    "#USE_SECURE_CERT=FALSE\n")
    assert pccs_url_from_qcnl(conf) == "https://localhost:8081/sgx/certification/v3/"
    assert pccs_url_from_qcnl(tmp_path / "absent.conf") is None
