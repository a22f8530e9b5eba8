"""Minting attestation tokens may not log out other enclaves (keyservice/
token_quota.py): a quota per measurement, and idle tokens go before ones in
use. On the old code a flood of mints evicted the oldest tokens first,
every honest enclave's among them."""

from __future__ import annotations

import dataclasses

import pytest

from keyservice.config import KeyServiceConfig
from keyservice.service import KeyService
from keyservice.token_quota import TokenBook
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.errors import AuthError
from sesemi.identity import Identity

SEAL = "5e" * 16
HONEST = ["a1" * 32, "a2" * 32, "a3" * 32]
FLOODER = "ff" * 32


def _ks(tmp_path, **cfg) -> KeyService:
    config = dataclasses.replace(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True),
                                 max_live_tokens=60, max_tokens_per_measurement=20,
                                 nonces_per_address=(1e6, 10**6), **cfg)
    ks = KeyService(config)
    owner = Identity.generate("o")
    ks.register_principal(owner.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, SEAL))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": {"mrenclave": HONEST},
                                           "seal_id": SEAL})
    return ks


def _mint(ks: KeyService, mr: str) -> str:
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(mr).evidence(report_data_binding(nonce, pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]


def _works(ks: KeyService, token: str) -> bool:
    try:
        ks.release_keys(token, {"model_id": "m", "seal_id": SEAL})
        return True
    except AuthError:
        return False


@pytest.mark.parametrize("flood_mr", [FLOODER, HONEST[0]], ids=["other-measurement", "same-measurement"])
def test_a_flood_of_mints_logs_out_no_enclave_in_use(tmp_path, flood_mr):
    ks = _ks(tmp_path)
    honest = [_mint(ks, mr) for mr in HONEST]
    assert all(_works(ks, t) for t in honest)  # in use
    for _ in range(300):
        _mint(ks, flood_mr)
    assert all(_works(ks, t) for t in honest)
    assert len(ks.store.live_tokens()) <= 60
    assert len(ks.tokens) <= 60


def test_the_largest_group_gives_up_tokens_over_the_global_cap(tmp_path):
    ks = _ks(tmp_path)
    honest = [_mint(ks, HONEST[1]) for _ in range(5)]  # minted, never used: idle, yet not the largest group
    for i in range(10):  # many measurements, each within its quota
        for _ in range(20):
            _mint(ks, f"{i:02x}" * 32)
    assert all(_works(ks, t) for t in honest)


def test_token_book_orders_idle_before_used_and_rebuilds_after_restart(tmp_path):
    book = TokenBook(per_group=2, cap=10)
    assert book.mint("a", "g", 1e12) == []
    book.touch("a")
    assert book.mint("b", "g", 1e12) == []
    assert book.mint("c", "g", 1e12) == ["b"]  # b idle, a in use
    book.purge(2e12)
    assert len(book) == 0
    ks = _ks(tmp_path)
    token = _mint(ks, HONEST[2])
    again = KeyService(ks.config)  # restarted: the tokens in the table are known again
    assert len(again.tokens) == 1 and _works(again, token)
