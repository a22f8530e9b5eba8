"""Client side of DCAP: `sesemi ks attest` verifies a key service's quote,
checks the binding of its HPKE key, judges it with the default TCB rule
unless told otherwise, and pins it.

A fake key service serves the fixture quote over HTTP. Its REPORT_DATA cannot
bind the client's fresh nonce, so over HTTP the fixture is always refused at
the binding step; acceptance is shown on `judge_key_service`, the step that
runs after the binding."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bundle_tool import cli, commands
from sesemi import hpke_box
from sesemi.attestation import dcap
from sesemi.attestation.dcap import DcapVerifier, FileCollateral, evidence_for_quote
from sesemi.client import KeyServiceClient, KsPin, attest_key_service, judge_key_service
from sesemi.encoding import b64e
from sesemi.errors import AttestationError, FormatError, PinMismatch, PolicyError
from sesemi.identity import Identity

from . import dcap_fixture as fx


@pytest.fixture(scope="module")
def claims():
    return DcapVerifier(FileCollateral(fx.COLLATERAL_PATH), clock=fx.clock(fx.INSIDE)).verify_quote(fx.quote())


@pytest.fixture(scope="module")
def fake_ks():
    ks_key = hpke_box.public_raw(hpke_box.new_private_key())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, obj: dict, header_key: str) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("X-Sesemi-KS-Key", header_key)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._send({"evidence": evidence_for_quote(fx.quote()), "hpke_public_key": b64e(ks_key),
                        "signing_public_key": b64e(b"s" * 32),
                        "tee": "occlum", "insecure_simulation": False}, ks_key.hex())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send({"principal_id": "x"}, "ff" * 32)  # answers as another key service

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


ACCEPT = {"accept_tcb_statuses": [fx.STATUS], "accept_advisories": list(fx.ADVISORIES)}
SIGNER_PIN = {"expect_mrsigner": fx.MRSIGNER, "expect_isv_prod_id": 0, "min_isv_svn": 0}


def test_judge_accepts_only_the_expected_enclave_with_an_accepted_status(claims):
    judge_key_service(claims, expect_mrenclave=fx.MRENCLAVE.upper(), **ACCEPT)
    judge_key_service(claims, **SIGNER_PIN, accept_tcb_statuses=["SWHardeningNeeded", fx.STATUS],
                      accept_advisories=list(fx.ADVISORIES))
    with pytest.raises(PolicyError) as ei:  # the default TCB rule: UpToDate only
        judge_key_service(claims, expect_mrenclave=fx.MRENCLAVE)
    assert ei.value.check == "tcb_status"
    with pytest.raises(PolicyError) as ei:  # advisories: only those the user accepted
        judge_key_service(claims, expect_mrenclave=fx.MRENCLAVE, accept_tcb_statuses=[fx.STATUS],
                          accept_advisories=["INTEL-SA-00289"])
    assert ei.value.check == "advisory_allowlist"
    with pytest.raises(PolicyError) as ei:
        judge_key_service(claims, expect_mrenclave="00" * 32, **ACCEPT)
    assert ei.value.check == "mrenclave"
    with pytest.raises(AttestationError) as ei:  # a quote alone says nothing about *which* enclave
        judge_key_service(claims, **ACCEPT)
    assert ei.value.check == "expected_identity"
    with pytest.raises(AttestationError) as ei:
        judge_key_service(dataclasses.replace(claims, debug=True), expect_mrenclave=fx.MRENCLAVE, **ACCEPT)
    assert ei.value.check == "debug"


def test_a_signer_pin_needs_a_product_id_and_a_minimum_svn(claims):
    for missing in ("expect_isv_prod_id", "min_isv_svn"):
        pin = {k: v for k, v in SIGNER_PIN.items() if k != missing}
        with pytest.raises(FormatError, match="--expect-isv-prod-id and --min-isv-svn"):
            judge_key_service(claims, **pin, **ACCEPT)
    # The same signer's other product, or an older release, is refused.
    with pytest.raises(PolicyError) as ei:
        judge_key_service(claims, **{**SIGNER_PIN, "expect_isv_prod_id": 1}, **ACCEPT)
    assert ei.value.check == "isv_prod_id"
    with pytest.raises(PolicyError) as ei:
        judge_key_service(claims, **{**SIGNER_PIN, "min_isv_svn": 1}, **ACCEPT)
    assert ei.value.check == "min_isv_svn"


def test_cli_ks_attest_refuses_a_bare_signer_pin(tmp_path, capsys):
    rc, _, err = _run_cli(capsys, "--home", str(tmp_path / "home"), "ks", "attest", "http://127.0.0.1:9",
                          "--expect-mrsigner", fx.MRSIGNER, "--collateral-file", str(fx.COLLATERAL_PATH))
    assert rc == 2 and err.count("\n") == 1 and "--expect-isv-prod-id and --min-isv-svn" in err


def test_attest_verifies_the_quote_then_checks_the_key_binding(fake_ks):
    verifier = DcapVerifier(FileCollateral(fx.COLLATERAL_PATH), clock=fx.clock(fx.INSIDE))
    with pytest.raises(AttestationError) as ei:
        attest_key_service(fake_ks, expect_mrenclave=fx.MRENCLAVE, dcap_verifier=verifier, **ACCEPT)
    assert ei.value.check == "report_data"
    with pytest.raises(AttestationError) as ei:
        attest_key_service(fake_ks, expect_mrenclave=fx.MRENCLAVE)
    assert ei.value.check == "collateral"
    late = DcapVerifier(FileCollateral(fx.COLLATERAL_PATH), clock=fx.clock(fx.WINDOW_END + 1))
    with pytest.raises(AttestationError) as ei:
        attest_key_service(fake_ks, expect_mrenclave=fx.MRENCLAVE, dcap_verifier=late)
    assert ei.value.check == "collateral_validity"


def test_a_dcap_pin_still_refuses_another_key(fake_ks, claims):
    pin = KsPin(url=fake_ks, hpke_public_key="ab" * 32, tee="sgx", mrenclave=claims.mrenclave,
                mrsigner=claims.mrsigner, isv_svn=0, insecure_simulation=False, tcb_status=claims.tcb_status)
    assert KsPin.from_json(json.loads(json.dumps(pin.to_json()))) == pin
    old = {k: v for k, v in pin.to_json().items() if k != "tcb_status"}  # pins saved before DCAP
    assert KsPin.from_json(old).tcb_status is None
    with pytest.raises(PinMismatch):
        KeyServiceClient(pin).register(Identity.generate("u"))


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_ks_attest_dcap(fake_ks, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dcap, "QCNL_CONF", tmp_path / "no-qcnl.conf")
    home = ("--home", str(tmp_path / "home"))
    # No collateral anywhere: refused, one line, saying what to configure.
    rc, _, err = _run_cli(capsys, *home, "ks", "attest", fake_ks, "--expect-mrenclave", fx.MRENCLAVE)
    assert rc == 1 and err.count("\n") == 1 and "--pccs-url or --collateral-file" in err
    # The fixture's collateral expired in 2025: the real clock refuses it.
    rc, _, err = _run_cli(capsys, *home, "ks", "attest", fake_ks, "--expect-mrenclave", fx.MRENCLAVE,
                          "--collateral-file", str(fx.COLLATERAL_PATH), "--accept-tcb-status", fx.STATUS)
    assert rc == 1 and err.count("\n") == 1 and "collateral is not valid at this time" in err
    assert not (tmp_path / "home" / "ks_pin.json").exists()


def test_cli_passes_collateral_and_statuses_through(fake_ks, tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_attest(url, **kw):
        seen.update(kw, url=url)
        return KsPin(url=url, hpke_public_key="ab" * 32, tee="sgx", mrenclave=fx.MRENCLAVE, mrsigner=fx.MRSIGNER,
                     isv_svn=0, insecure_simulation=False, tcb_status=fx.STATUS)

    monkeypatch.setattr(commands, "attest_key_service", fake_attest)
    rc, out, _ = _run_cli(capsys, "--home", str(tmp_path / "home"), "ks", "attest", fake_ks,
                          "--expect-mrenclave", fx.MRENCLAVE, "--collateral-file", str(fx.COLLATERAL_PATH),
                          "--accept-tcb-status", "SWHardeningNeeded", "--accept-tcb-status", fx.STATUS)
    assert rc == 0 and f"tcb status {fx.STATUS}" in out
    assert (tmp_path / "home" / "ks_pin.json").exists()
    assert seen["accept_tcb_statuses"] == ["SWHardeningNeeded", fx.STATUS]
    assert isinstance(seen["dcap_verifier"], DcapVerifier)
    assert isinstance(seen["dcap_verifier"].collateral, FileCollateral)
    from bundle_tool.home import FileMarks

    assert isinstance(seen["dcap_verifier"].marks, FileMarks)  # the floor outlives the run
    assert seen["expect_mrenclave"] == fx.MRENCLAVE


def test_cli_publish_carries_tcb_statuses_and_advisory_denylist(tmp_path, capsys, monkeypatch):
    from bundle_tool.home import Home

    home = Home(tmp_path / "home")
    home.new_identity("owner")
    home.save_model_key("m", bytes(32), "ab" * 16)
    published = {}

    class FakeKs:
        def publish_model(self, owner, model_id, key, policy, seal_id):
            from sesemi.ks_log import AUDIT_FIELDS

            published[model_id] = policy
            entry = {**{f: None for f in AUDIT_FIELDS}, "event": "put_model", "model_id": model_id}
            return {"receipt": {"format": "sesemi-ks-receipt/v1", "leaf_index": 1, "entry": entry,
                                "inclusion_proof": [], "checkpoint": ""}}

    monkeypatch.setattr(commands, "_ks", lambda args: FakeKs())
    rc, _, err = _run_cli(capsys, "--home", str(home.root), "model", "publish", "m", "--as", "owner",
                          "--allow-mrenclave", fx.MRENCLAVE, "--accept-tcb-status", fx.STATUS,
                          "--allow-advisory", "INTEL-SA-00289", "--deny-advisory", "INTEL-SA-00615")
    assert rc == 0, err
    policy = published["m"]
    assert policy.tcb_statuses == ("UpToDate", fx.STATUS)
    assert policy.advisory_denylist == ("INTEL-SA-00615",)
    assert policy.advisory_allowlist == ("INTEL-SA-00289",)


def test_ks_attest_keeps_its_time_floor_in_home(tmp_path):
    from bundle_tool.home import Home
    from sesemi.attestation.dcap import FLOOR_MARK

    def verifier():
        return DcapVerifier(FileCollateral(fx.COLLATERAL_PATH), clock=fx.clock(fx.INSIDE),
                            marks=Home(tmp_path / "home").dcap_marks())

    verifier().verify_quote(fx.quote())
    marks = Home(tmp_path / "home").dcap_marks()
    assert marks.mark(FLOOR_MARK) == fx.WINDOW_START and marks.mark("dcap/tcb_eval/00A067110000") == 17
    marks.raise_mark(FLOOR_MARK, fx.WINDOW_END + 86400)  # a later run verified newer collateral
    with pytest.raises(AttestationError) as ei:          # this run's clock is set back into the window
        verifier().verify_quote(fx.quote())
    assert ei.value.check == "clock_behind_floor"
    (tmp_path / "home" / "dcap_marks.json").write_text("[1]")
    with pytest.raises(FormatError, match="not a marks file"):
        verifier().verify_quote(fx.quote())
