"""What callers without a credential can make the key service keep (issue 13, item 8)."""

from __future__ import annotations

import dataclasses

import pytest

from keyservice import KeyService, KeyServiceConfig
from keyservice.limits import RateLimiter
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.errors import RateLimited, ReplayError

MR = "ab" * 32


def _ks(tmp_path, **kw) -> KeyService:
    return KeyService(dataclasses.replace(KeyServiceConfig(db_path=tmp_path / "ks.db",
                                                           insecure_sim_attestation=True), **kw))


def test_outstanding_nonces_are_capped_and_the_newest_still_works(tmp_path):
    ks = _ks(tmp_path, max_outstanding_nonces=5)
    nonces = [ks.new_enclave_nonce()["nonce"] for _ in range(20)]
    assert ks.store._one("SELECT COUNT(*) AS n FROM att_nonces")["n"] == 5
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    ev = SimBackend(MR).evidence(report_data_binding(bytes.fromhex(nonces[-1]), pub))
    assert ks.attest_enclave({"nonce": nonces[-1], "evidence": ev, "public_key": b64e(pub)})["token"]


def test_live_tokens_are_capped(tmp_path):
    ks = _ks(tmp_path, max_live_tokens=3)
    for _ in range(6):
        pub = hpke_box.public_raw(hpke_box.new_private_key())
        nonce = ks.new_enclave_nonce()["nonce"]
        ev = SimBackend(MR).evidence(report_data_binding(bytes.fromhex(nonce), pub))
        ks.attest_enclave({"nonce": nonce, "evidence": ev, "public_key": b64e(pub)})
    assert ks.store._one("SELECT COUNT(*) AS n FROM tokens")["n"] == 3


def test_refused_attestations_are_counted_not_written_one_row_each(tmp_path):
    ks = _ks(tmp_path)
    before = ks.store._one("SELECT COUNT(*) AS n FROM audit")["n"]
    for _ in range(50):
        with pytest.raises(ReplayError):
            ks.attest_enclave({"nonce": "00" * 32, "evidence": {}, "public_key": b64e(b"\1" * 1216)})
    assert ks.store._one("SELECT COUNT(*) AS n FROM audit")["n"] == before
    ks.maintenance()
    rows = ks.store._all("SELECT reason FROM audit WHERE event='attest' AND outcome='refused'")
    assert len(rows) == 1 and "50 refusal(s)" in rows[0]["reason"]


def test_rate_limiter_per_address_with_a_bounded_table():
    now = [0.0]
    lim = RateLimiter("registrations", 1.0, 3, max_addresses=100, clock=lambda: now[0])
    for _ in range(3):
        lim.take("a")
    with pytest.raises(RateLimited):
        lim.take("a")
    lim.take("b")  # another address is not affected
    now[0] += 1.0
    lim.take("a")
    for i in range(1000):
        lim.take(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) == 100


def test_an_ipv6_subnet_is_one_address_for_the_rate_limits(tmp_path):
    """A host given an IPv6 /64 picks any of its 2^64 addresses: counted one
    by one, it would get a fresh bucket per request and the per-address
    bound would bound nothing. IPv4 clients of a dual-stack listener
    (::ffff:a.b.c.d) still count one by one, not as one shared subnet."""
    from keyservice.api import create_app

    ks = _ks(tmp_path, nonces_per_address=(0.001, 3))
    client = create_app(ks).test_client()

    def nonce(addr: str) -> int:
        return client.post("/v1/enclave/nonce", environ_base={"REMOTE_ADDR": addr}).status_code

    assert [nonce(f"2001:db8:1:2::{i:x}") for i in range(1, 5)] == [200, 200, 200, 429]
    assert nonce("2001:db8:1:3::1") == 200  # another subnet has its own bucket
    assert [nonce(f"::ffff:192.0.2.{i}") for i in range(1, 5)] == [200] * 4
