"""The key service's side of a model's roster (keyservice/roster_source.py):
who it lists, its pages and changes, and who may read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyservice.config import KeyServiceConfig
from keyservice.service import KeyService
from sesemi import hpke_box, roster
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.errors import PolicyError
from sesemi.identity import Identity

MR, OTHER_MR = "ab" * 32, "cd" * 32
SEAL = "5e" * 16


def _token(ks: KeyService, mr: str) -> str:
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(mr).evidence(report_data_binding(nonce, pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]


def _world(tmp_path: Path) -> tuple[KeyService, Identity, list[Identity]]:
    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True))
    owner = Identity.generate("o")
    users = [Identity.generate(f"u{i}") for i in range(5)]
    for i in (owner, *users):
        ks.register_principal(i.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, SEAL))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": {"mrenclave": [MR]}, "seal_id": SEAL})
    return ks, owner, users


def _enroll(ks: KeyService, u: Identity) -> None:
    box = hpke_box.seal(b"r" * 32, ks.hpke_public, hpke_box.info("request-key", "m", u.principal_id))
    ks.put_request_key(u.principal_id, "m", {"wrapped_key": b64e(box)})


def _listed(answer: dict) -> dict[bytes, int]:
    return dict(roster.decode(answer["records"]))


def test_roster_lists_granted_and_enrolled_users_with_their_versions(tmp_path):
    ks, owner, (a, b, c, d, e) = _world(tmp_path)
    for u in (a, b, c):
        ks.grant(owner.principal_id, "m", u.principal_id)
    for u in (a, b, d):  # d enrolled nothing: it cannot without a grant (refused), so only a and b count
        try:
            _enroll(ks, u)
        except Exception:  # noqa: BLE001 - d is refused, as it should be
            assert u is d
    _enroll(ks, b)  # version 2
    token = _token(ks, MR)
    first = ks.enclave_roster(token, {"model_id": "m"})
    h = {u: roster.id_hash("m", u.principal_id) for u in (a, b, c, d, e)}
    assert _listed(first) == {h[a]: 1, h[b]: 2} and first["next"] is None
    # The model-key release carries the same first page, under the release's signature.
    rel = ks.release_keys(token, {"model_id": "m", "seal_id": SEAL})
    assert _listed(rel["roster"]) == _listed(first)
    # Changes since the roster's log size: a revocation (0), an enrolment.
    ks.revoke(owner.principal_id, "m", a.principal_id)
    _enroll(ks, c)
    delta = ks.enclave_roster(token, {"model_id": "m", "since": first["seq"]})
    assert delta["since"] == first["seq"] and _listed(delta) == {h[a]: 0, h[c]: 1}
    assert _listed(ks.enclave_roster(token, {"model_id": "m", "since": delta["seq"]})) == {}


def test_roster_is_for_enclaves_the_model_allows_and_pages(tmp_path, monkeypatch):
    ks, owner, users = _world(tmp_path)
    for u in users:
        ks.grant(owner.principal_id, "m", u.principal_id)
        _enroll(ks, u)
    with pytest.raises(PolicyError):  # who is granted is the owner's secret
        ks.enclave_roster(_token(ks, OTHER_MR), {"model_id": "m"})
    monkeypatch.setattr(roster, "PAGE", 2)
    token, after, seen = _token(ks, MR), "", {}
    while after is not None:
        page = ks.enclave_roster(token, {"model_id": "m", "after": after})
        seen.update(_listed(page))
        after = page["next"]
    assert len(seen) == 5
    # Too many changes for one answer: the first page of the whole roster instead.
    ans = ks.enclave_roster(token, {"model_id": "m", "since": 0})
    assert "since" not in ans and ans["after"] == ""
