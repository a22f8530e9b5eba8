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
from sesemi.attestation.dcap import (DcapVerifier, FileCollateral, MemoryMarks, PccsCollateral,
                                     collateral_next_update,
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

    def verified(self, quote, collateral, facts, now) -> None:
        pass


def verifier(at: float = fx.INSIDE, **kw) -> DcapVerifier:
    return DcapVerifier(Fixed(), clock=fx.clock(at), **kw)


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
    EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=("UpToDate", fx.STATUS),
                  advisory_allowlist=fx.ADVISORIES).check(claims)
    EnclavePolicy.from_json({"mrsigner": [fx.MRSIGNER], "isv_prod_id": 0, "min_isv_svn": 0,
                             "tcb_statuses": ["UpToDate", "SWHardeningNeeded", fx.STATUS],
                             "advisory_allowlist": [*fx.ADVISORIES, "INTEL-SA-00334"],
                             "advisory_denylist": ["INTEL-SA-00334"]}).check(claims)


def test_advisories_are_an_allowlist_and_the_denylist_only_narrows_it(claims):
    status = {"mrenclave": (fx.MRENCLAVE,), "tcb_statuses": (fx.STATUS,)}
    for allow in ((), ("INTEL-SA-00289",), ("INTEL-SA-00615",)):  # an advisory nobody accepted refuses
        with pytest.raises(PolicyError) as ei:
            EnclavePolicy(**status, advisory_allowlist=allow).check(claims)
        assert ei.value.check == "advisory_allowlist"
    with pytest.raises(PolicyError) as ei:
        EnclavePolicy(**status, advisory_allowlist=fx.ADVISORIES, advisory_denylist=("INTEL-SA-00615",)).check(claims)
    assert ei.value.check == "advisory_denylist"
    # A denylist alone never accepts: an advisory published later still refuses.
    with pytest.raises(PolicyError) as ei:
        EnclavePolicy(**status, advisory_denylist=("INTEL-SA-00334",)).check(claims)
    assert ei.value.check == "advisory_allowlist"


@pytest.mark.parametrize("policy,check", [
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,)), "tcb_status"),  # the default: UpToDate only
    (EnclavePolicy(mrenclave=("00" * 32,), tcb_statuses=(fx.STATUS,)), "mrenclave"),
    (EnclavePolicy(mrsigner=("00" * 32,), tcb_statuses=(fx.STATUS,)), "mrsigner"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), isv_prod_id=1, tcb_statuses=(fx.STATUS,)), "isv_prod_id"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), min_isv_svn=1, tcb_statuses=(fx.STATUS,)), "min_isv_svn"),
    (EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=(fx.STATUS,), advisory_allowlist=fx.ADVISORIES,
                   advisory_denylist=("INTEL-SA-00615",)), "advisory_denylist"),
])
def test_refused_by_policy_naming_the_check(claims, policy, check):
    with pytest.raises(PolicyError) as ei:
        policy.check(claims)
    assert ei.value.check == check


def test_debug_enclave_refused_unless_allowed(claims):
    dbg = dataclasses.replace(claims, debug=True)
    policy = EnclavePolicy(mrenclave=(fx.MRENCLAVE,), tcb_statuses=(fx.STATUS,), advisory_allowlist=fx.ADVISORIES)
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
    # floor_seed=0: dcap-qvl's own window, without the built-in time floor
    if ok:
        assert verifier(at, floor_seed=0).verify_quote(fx.quote()).tcb_status == fx.STATUS
    else:
        with pytest.raises(AttestationError) as ei:
            verifier(at, floor_seed=0).verify_quote(fx.quote())
        assert ei.value.check == "collateral_validity"


# --- the time floor and TCB evaluation numbers --------------------------------

def test_the_built_in_floor_refuses_a_clock_before_it():
    assert dcap.TIME_FLOOR_SEED == fx.WINDOW_START  # no later than the fixture's own signed dates
    with pytest.raises(AttestationError) as ei:
        verifier(fx.WINDOW_START - 1).verify_quote(fx.quote())
    assert ei.value.check == "clock_behind_floor"


def test_verified_collateral_raises_the_floor_to_its_newest_signed_date():
    marks = MemoryMarks()
    v = verifier(fx.INSIDE, marks=marks, floor_seed=0)
    v.verify_quote(fx.quote())
    # TCB info issueDate, the newest of the fixture's issueDate / thisUpdate dates
    assert marks.mark(dcap.FLOOR_MARK) == fx.WINDOW_START
    assert marks.mark("dcap/tcb_eval/00A067110000") == 17 and marks.mark("dcap/qe_eval/QE") == 17


def test_clock_set_back_behind_the_floor_is_refused_and_an_expired_quote_stays_expired():
    marks = MemoryMarks()
    marks.raise_mark(dcap.FLOOR_MARK, fx.WINDOW_END + 86400)  # what later verified collateral leaves
    with pytest.raises(AttestationError) as ei:  # the clock set back into the fixture's window
        verifier(fx.INSIDE, marks=marks).verify_quote(fx.quote())
    assert ei.value.check == "clock_behind_floor"
    with pytest.raises(AttestationError) as ei:  # a clock at or past the floor: verified there, expired
        verifier(fx.WINDOW_END + 86400, marks=marks).verify_quote(fx.quote())
    assert ei.value.check == "collateral_validity"
    assert marks.mark(dcap.FLOOR_MARK) == fx.WINDOW_END + 86400  # refusals never move it


def test_a_lower_tcb_evaluation_number_than_seen_is_refused():
    marks = MemoryMarks()
    marks.raise_mark("dcap/tcb_eval/00A067110000", 18)
    with pytest.raises(AttestationError) as ei:
        verifier(marks=marks).verify_quote(fx.quote())
    assert ei.value.check == "tcb_eval_rollback"
    marks = MemoryMarks()
    marks.raise_mark("dcap/qe_eval/QE", 18)
    with pytest.raises(AttestationError) as ei:
        verifier(marks=marks).verify_quote(fx.quote())
    assert ei.value.check == "tcb_eval_rollback"
    with pytest.raises(AttestationError) as ei:
        verifier(min_tcb_eval=18).verify_quote(fx.quote())
    assert ei.value.check == "tcb_eval_min"
    verifier(min_tcb_eval=17).verify_quote(fx.quote())


def _report_doc() -> dict:
    import dcap_qvl

    return json.loads(dcap_qvl.verify(fx.quote(), Fixed().collateral, int(fx.INSIDE)).to_json())


@pytest.mark.parametrize("path", [("advisory_ids",), ("status",), ("report", "SgxEnclave", "isv_svn"),
                                  ("report", "SgxEnclave", "attributes"), ("report", "SgxEnclave", "reserved3")])
def test_a_missing_report_field_fails_closed(path):
    doc = _report_doc()
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    with pytest.raises(AttestationError) as ei:
        dcap.claims_from_report(doc)
    assert ei.value.check in ("report_shape", "quote")
    doc = _report_doc()
    doc["advisory_ids"] = "INTEL-SA-00289"  # a string is not a list
    with pytest.raises(AttestationError):
        dcap.claims_from_report(doc)
    doc = _report_doc()
    doc["report"]["SgxEnclave"]["isv_svn"] = True
    with pytest.raises(AttestationError):
        dcap.claims_from_report(doc)


@pytest.mark.parametrize("field,offset,byte", [
    ("attributes", 0, 0x85),      # SGX_FLAGS_KSS
    ("reserved1", 12, 0x01),      # ISVEXTPRODID
    ("reserved3", 32, 0x01),      # CONFIGID
    ("reserved4", 0, 0x01),       # CONFIGSVN
    ("reserved4", 44, 0x01),      # ISVFAMILYID
])
def test_kss_enclaves_are_refused(field, offset, byte):
    doc = _report_doc()
    assert dcap.claims_from_report(doc).mrenclave == fx.MRENCLAVE
    raw = bytearray(bytes.fromhex(doc["report"]["SgxEnclave"][field]))
    raw[offset] = byte
    doc["report"]["SgxEnclave"][field] = raw.hex()
    with pytest.raises(AttestationError) as ei:
        dcap.claims_from_report(doc)
    assert ei.value.check == "kss"


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
        self.answer = fx.collateral_json()

    def __call__(self, url: str, quote: bytes, timeout: float):
        self.calls.append(url)
        if self.fail:
            raise ValueError("connection refused")
        doc = json.loads(self.answer)
        doc["pck_certificate_chain"] = doc["tcb_info_issuer_chain"]
        return parse_collateral(json.dumps(doc))


def _altered(**tcb_fields) -> bytes:
    """The fixture's collateral with its TCB info altered (its signature no longer verifies)."""
    doc = json.loads(fx.collateral_json())
    tcb = json.loads(doc["tcb_info"])
    tcb.update(tcb_fields)
    doc["tcb_info"] = json.dumps(tcb)
    return json.dumps(doc).encode()


def _pccs(fetch, **kw) -> PccsCollateral:
    return PccsCollateral("https://pccs.example:8081/sgx/certification/v4/", fetch=fetch, **kw)


def test_pccs_collateral_is_cached_once_verified_and_refreshed_daily():
    fetch = FakePccs()
    src = _pccs(fetch, retry_s=300)
    q = fx.quote()
    assert DcapVerifier(src, clock=fx.clock(fx.INSIDE)).verify_quote(q).tcb_status == fx.STATUS
    assert fetch.calls == ["https://pccs.example:8081"]  # normalised; the quote's own PCK chain verified
    assert src.get(q, fx.INSIDE + 3600) is src._cache[src._key(q)].verified
    DcapVerifier(src, clock=fx.clock(fx.INSIDE + 23 * 3600)).verify_quote(q)
    assert len(fetch.calls) == 1
    # A day later: fetched again although the collateral is valid for 17 more days.
    DcapVerifier(src, clock=fx.clock(fx.INSIDE + 24 * 3600 + 1)).verify_quote(q)
    assert len(fetch.calls) == 2


def test_pccs_answer_that_does_not_verify_is_not_cached():
    fetch = FakePccs()
    fetch.answer = _altered(nextUpdate="2030-01-01T00:00:00Z")  # a bad answer claiming a long life
    src = _pccs(fetch, retry_s=300)
    q = fx.quote()
    with pytest.raises(AttestationError) as ei:
        DcapVerifier(src, clock=fx.clock(fx.INSIDE)).verify_quote(q)
    assert ei.value.check == "quote"
    assert src._cache[src._key(q)].verified is None
    fetch.answer = fx.collateral_json()  # the PCCS recovers: its answer is fetched after retry_s, not in 2030
    assert DcapVerifier(src, clock=fx.clock(fx.INSIDE + 301)).verify_quote(q).mrenclave == fx.MRENCLAVE
    assert len(fetch.calls) == 2


def test_pccs_older_answer_cannot_replace_verified_collateral():
    fetch = FakePccs()
    src = _pccs(fetch, retry_s=300)
    q = fx.quote()
    DcapVerifier(src, clock=fx.clock(fx.INSIDE)).verify_quote(q)
    good = src._cache[src._key(q)].verified
    fetch.answer = _altered(tcbEvaluationDataNumber=16)
    t = fx.INSIDE + 24 * 3600 + 1
    assert src.get(q, t) is good and len(fetch.calls) == 2  # fetched, discarded as a downgrade
    assert src.get(q, t + 10) is good and len(fetch.calls) == 2  # and not refetched before retry_s


def test_pccs_failure_is_negatively_cached_and_the_cache_serves_while_valid():
    fetch = FakePccs()
    fetch.fail = True
    src = _pccs(fetch, negative_ttl_s=30)
    q = fx.quote()
    with pytest.raises(UnavailableError, match="PCCS"):
        src.get(q, fx.INSIDE)
    with pytest.raises(UnavailableError, match="failed recently"):
        src.get(q, fx.INSIDE + 10)
    assert len(fetch.calls) == 1
    fetch.fail = False
    DcapVerifier(src, clock=fx.clock(fx.INSIDE + 31)).verify_quote(q)
    assert len(fetch.calls) == 2
    fetch.fail = True
    t = fx.INSIDE + 31 + 24 * 3600 + 1
    assert src.get(q, t) is not None and len(fetch.calls) == 3  # refresh failed: the cache serves
    with pytest.raises(UnavailableError):
        src.get(q, fx.WINDOW_END + 1)  # ... until its signed nextUpdate


class KeyedPccs(PccsCollateral):
    """Platform family = the quote's last byte, so tests can name families."""

    def _key(self, quote: bytes):
        return (quote[-1:].hex(), "processor", True)


def test_slow_pccs_blocks_only_its_own_platform_family_and_only_for_a_bounded_time():
    import threading

    release = threading.Event()
    started = threading.Event()

    def fetch(url, quote, timeout):
        if quote.endswith(b"A"):
            started.set()
            assert release.wait(60), "test never released the slow fetch"
        return parse_collateral(fx.collateral_json())

    src = KeyedPccs("https://pccs.example", fetch=fetch, lock_timeout_s=0.2)
    slow = threading.Thread(target=src.get, args=(b"quote-A", fx.INSIDE))
    slow.start()
    try:
        assert started.wait(30)
        assert src.get(b"quote-B", fx.INSIDE) is not None  # another family: not behind the slow fetch
        with pytest.raises(UnavailableError, match="did not finish within 0.2 s"):
            src.get(b"quote-A", fx.INSIDE)  # the same family: a bounded wait, then a clear refusal
    finally:
        release.set()
        slow.join(30)


def test_platform_families_named_by_unverified_quotes_are_bounded():
    fetch = FakePccs()
    fetch.fail = True
    src = KeyedPccs("https://pccs.example", fetch=fetch, max_entries=4)
    for i in range(50):
        with pytest.raises(UnavailableError):
            src.get(b"quote" + bytes([i]), fx.INSIDE)
    assert len(src._cache) == 4


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


def test_a_silent_pccs_times_out_and_is_negatively_cached():
    """dcap-qvl's own fetch against a PCCS that accepts and never answers."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        src = PccsCollateral(f"http://127.0.0.1:{srv.getsockname()[1]}", fetch_timeout_s=0.5, negative_ttl_s=30)
        with pytest.raises(UnavailableError, match="timed out after 0.5 s"):
            src.get(fx.quote(), fx.INSIDE)
        n = src.fetches
        with pytest.raises(UnavailableError, match="failed recently"):
            src.get(fx.quote(), fx.INSIDE + 1)
        assert src.fetches == n == 1
    finally:
        stop.set()
        t.join(5)
        for c in accepted:
            c.close()
        srv.close()
