"""Policy checks, sim evidence, REPORT_DATA binding, signed calls."""

import pytest

from sesemi import hpke_box, signed_call
from sesemi.errors import StaleSequence
from sesemi.attestation import Claims, report_data_binding, verify_evidence
from sesemi.attestation.sim import SIM_MRSIGNER, SimBackend
from sesemi.encoding import b64d, b64e, canonical_json, json_loads
from sesemi.errors import AttestationError, AuthError, FormatError, PolicyError, ReplayError
from sesemi.identity import Identity
from sesemi.policy import EnclavePolicy

MR = "ab" * 32


def _claims(**kw):
    base = dict(tee="sim", mrenclave=MR, mrsigner=SIM_MRSIGNER, isv_prod_id=1, isv_svn=1, debug=False,
                report_data="00" * 64)
    base.update(kw)
    return Claims(**base)


def test_policy_requires_an_allowlist():
    with pytest.raises(FormatError):
        EnclavePolicy()
    with pytest.raises(FormatError):
        EnclavePolicy.from_json({"mrenclave": ["zz"]})
    with pytest.raises(FormatError):
        EnclavePolicy.from_json({"mrenclave": [MR], "surprise": 1})


@pytest.mark.parametrize("claims,policy,check", [
    (_claims(mrenclave="cd" * 32), EnclavePolicy(mrenclave=(MR,)), "mrenclave"),
    (_claims(), EnclavePolicy(mrsigner=("cd" * 32,)), "mrsigner"),
    (_claims(), EnclavePolicy(mrenclave=(MR,), mrsigner=("cd" * 32,)), "mrsigner"),
    (_claims(isv_svn=1), EnclavePolicy(mrenclave=(MR,), min_isv_svn=2), "min_isv_svn"),
    (_claims(isv_prod_id=7), EnclavePolicy(mrenclave=(MR,), isv_prod_id=1), "isv_prod_id"),
    (_claims(debug=True), EnclavePolicy(mrenclave=(MR,)), "debug"),
    (_claims(tee="sgx", tcb_status="SWHardeningNeeded"), EnclavePolicy(mrenclave=(MR,)), "tcb_status"),
    (_claims(tee="sgx", tcb_status="UpToDate", advisory_ids=("INTEL-SA-1",)),
     EnclavePolicy(mrenclave=(MR,), advisory_denylist=("INTEL-SA-1",)), "advisory_denylist"),
])
def test_policy_refusals_name_the_check(claims, policy, check):
    with pytest.raises(PolicyError) as ei:
        policy.check(claims)
    assert ei.value.check == check


def test_policy_accepts():
    EnclavePolicy(mrenclave=(MR,)).check(_claims())
    EnclavePolicy(mrsigner=(SIM_MRSIGNER,), min_isv_svn=1).check(_claims())
    EnclavePolicy(mrenclave=(MR,), allow_debug=True).check(_claims(debug=True))
    p = EnclavePolicy.from_json(EnclavePolicy(mrenclave=(MR,), min_isv_svn=3).to_json())
    assert p.min_isv_svn == 3 and p.mrenclave == (MR,)


def test_sim_evidence_binding_and_flag():
    nonce, pub = b"n" * 32, hpke_box.public_raw(hpke_box.new_private_key())
    ev = SimBackend(MR).evidence(report_data_binding(nonce, pub))
    claims = verify_evidence(ev, nonce=nonce, public_key=pub, allow_sim=True)
    assert claims.mrenclave == MR and claims.simulated
    with pytest.raises(AttestationError, match="sim evidence refused"):
        verify_evidence(ev, nonce=nonce, public_key=pub, allow_sim=False)
    with pytest.raises(AttestationError, match="report_data"):
        verify_evidence(ev, nonce=b"m" * 32, public_key=pub, allow_sim=True)
    with pytest.raises(AttestationError, match="report_data"):
        other = hpke_box.public_raw(hpke_box.new_private_key())
        verify_evidence(ev, nonce=nonce, public_key=other, allow_sim=True)
    body = json_loads(b64d(ev["body"]))
    body["mrenclave"] = "cd" * 32
    forged = {**ev, "body": b64e(canonical_json(body))}
    with pytest.raises(AttestationError, match="signature"):
        verify_evidence(forged, nonce=nonce, public_key=pub, allow_sim=True)
    with pytest.raises(AttestationError, match="not supported"):
        verify_evidence({"type": "tdx"}, nonce=nonce, public_key=pub, allow_sim=True)


def test_signed_call_verification():
    ident = Identity.generate("o")
    last: dict[str, int] = {}

    def claim(pid, seq):
        if seq <= last.get(pid, 0):
            raise StaleSequence("stale", last.get(pid, 0))
        last[pid] = seq

    keys = {ident.principal_id: ident.public_raw}
    h = signed_call.sign(ident, "PUT", "/v1/models/m", "aud", b"{}", 1000.0, 1)
    v = signed_call.verify(h, "PUT", "/v1/models/m", "aud", b"{}", 1000.0, keys.get, claim)
    assert v.principal_id == ident.principal_id and v.seq == 1
    with pytest.raises(ReplayError):
        signed_call.verify(h, "PUT", "/v1/models/m", "aud", b"{}", 1000.0, keys.get, claim)
    for args in (("PUT", "/v1/models/x", "aud", b"{}"), ("PUT", "/v1/models/m", "aud2", b"{}"),
                 ("PUT", "/v1/models/m", "aud", b"{ }"), ("DELETE", "/v1/models/m", "aud", b"{}")):
        h2 = signed_call.sign(ident, "PUT", "/v1/models/m", "aud", b"{}", 1000.0, 7)
        with pytest.raises(AuthError):
            signed_call.verify(h2, *args, 1000.0, keys.get, claim)
    h3 = signed_call.sign(ident, "PUT", "/p", "aud", b"", 1000.0, 8)
    with pytest.raises(ReplayError, match="window"):
        signed_call.verify(h3, "PUT", "/p", "aud", b"", 1000.0 + 500, keys.get, claim)
    with pytest.raises(AuthError, match="unknown principal"):
        signed_call.verify(h3, "PUT", "/p", "aud", b"", 1000.0, lambda _p: None, claim)
    with pytest.raises(AuthError, match="unsigned"):
        signed_call.verify({}, "PUT", "/p", "aud", b"", 1000.0, keys.get, claim)


@pytest.mark.parametrize("field,value", [
    ("isv_prod_id", 1 << 64), ("isv_svn", 1 << 64), ("isv_svn", -1), ("isv_svn", 65536), ("isv_svn", True),
    ("isv_svn", 1.0), ("debug", "false"), ("mrenclave", "AB" * 32), ("mrenclave", MR + "\n"),
    ("report_data", "00" * 63), ("tee", "tdx"),
])
def test_every_claim_has_a_range(field, value):
    """Sim claims >= 2**64 reached the store and gave a 500."""
    with pytest.raises(FormatError, match=field):
        _claims(**{field: value})
