"""Regressions for problems a security review found: fail-open policy parsing,
sim tokens surviving a restart without the insecure flag, refusals missing
from the audit log."""

from pathlib import Path

import pytest

from keyservice.config import KeyServiceConfig
from keyservice.service import KeyService
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.errors import AccessDenied, AttestationError, FormatError
from sesemi.identity import Identity
from sesemi.policy import EnclavePolicy

MR = "ab" * 32
SEAL = "5e" * 16


@pytest.mark.parametrize("field,value", [
    ("allow_debug", "false"), ("allow_debug", 0), ("advisory_denylist", "INTEL-SA-00615"),
    ("tcb_statuses", "UpToDate"), ("min_isv_svn", True), ("min_isv_svn", "3"), ("isv_prod_id", 1.5),
    ("advisory_denylist", [1, 2]),
])
def test_policy_parsing_is_strict(field, value):
    with pytest.raises(FormatError, match=field):
        EnclavePolicy.from_json({"mrenclave": [MR], field: value})


def _ks(path: Path, insecure: bool) -> KeyService:
    return KeyService(KeyServiceConfig(db_path=path, insecure_sim_attestation=insecure))


def _sim_token(ks: KeyService) -> str:
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(MR).evidence(report_data_binding(nonce, pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]


def test_sim_token_void_after_restart_without_flag(tmp_path):
    token = _sim_token(_ks(tmp_path / "ks.db", insecure=True))
    ks = _ks(tmp_path / "ks.db", insecure=False)
    with pytest.raises(AttestationError, match="sim evidence refused"):
        ks.release_keys(token, {"model_id": "m"})


def test_release_body_types_are_checked(tmp_path):
    ks = _ks(tmp_path / "ks.db", insecure=True)
    token = _sim_token(ks)
    for body in ({"model_id": "m", "user_id": ["x"]}, {"model_id": ["m"]}, {"model_id": "m", "model_key": "no"}):
        with pytest.raises(FormatError):
            ks.release_keys(token, body)


def test_refused_owner_calls_are_audited(tmp_path):
    ks = _ks(tmp_path / "ks.db", insecure=True)
    owner, other = Identity.generate("o"), Identity.generate("x")
    for i in (owner, other):
        ks.register_principal(i.public_raw)
    key = b"k" * 32

    def upload(who):
        box = hpke_box.seal(key, ks.hpke_public, hpke_box.info("model-key", "m", who.principal_id, SEAL))
        return {"wrapped_key": b64e(box), "policy": {"mrenclave": [MR]}, "seal_id": SEAL}

    ks.put_model(owner.principal_id, "m", upload(owner))
    with pytest.raises(AccessDenied):
        ks.put_model(other.principal_id, "m", upload(other))
    with pytest.raises(AccessDenied):
        ks.grant(other.principal_id, "m", owner.principal_id)
    with pytest.raises(AccessDenied):
        ks.put_request_key(other.principal_id, "m", {})
    refused = [(e["event"], e["principal"]) for e in ks.audit_log(owner.principal_id, "m") if e["outcome"] == "refused"]
    assert ("put_model", other.principal_id) in refused
    assert ("grant", other.principal_id) in refused
    assert ("put_request_key", other.principal_id) in refused


def test_missing_secrets_file_is_refused_when_keys_are_stored(tmp_path):
    ks = _ks(tmp_path / "ks.db", insecure=True)
    owner = Identity.generate("o")
    ks.register_principal(owner.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, SEAL))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": {"mrenclave": [MR]}, "seal_id": SEAL})
    ks.config.secrets_path.rename(tmp_path / "elsewhere")
    from sesemi.errors import SesemiError

    with pytest.raises(SesemiError, match="secrets file"):
        _ks(tmp_path / "ks.db", insecure=True)
    assert not ks.config.secrets_path.exists()  # nothing was created in its place

