"""A flood of anonymous requests grows no table without bound (issue 13, item 8).

`make test` sends 1,000; the soak run 10,000 (`make soak`). Both print the
growth of every table, the figures docs/protocol.md quotes:

    .venv/bin/python -m pytest -q -s tests/e2e/test_keyservice_flood.py -m 'soak or not soak'
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3

from bundle_tool.procs import start_keyservice
from sesemi import signed_call
from sesemi.client import attest_key_service
from sesemi.encoding import b64e, json_dumps
from sesemi.identity import Identity

TABLES = ("principals", "call_seqs", "models", "grants", "request_keys", "att_nonces", "tokens", "audit")


def _counts(db) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def _flood(url: str, audience: str, n: int) -> dict[int, int]:
    http = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(connect=10, read=30))
    json_h = {"Content-Type": "application/json"}

    def one(i: int) -> int:
        kind = i % 10
        if kind < 4:  # a self-signed registration of a fresh key: valid, and anonymous
            who = Identity.generate("x")
            body = json_dumps({"public_key": b64e(who.public_raw)})
            h = {**signed_call.sign(who, "POST", "/v1/principals", audience, body, time.time(), 1), **json_h}
            return http.request("POST", url + "/v1/principals", body=body, headers=h).status
        if kind < 7:
            return http.request("POST", url + "/v1/enclave/nonce").status
        if kind < 9:  # junk evidence under a nonce nobody issued
            body = json_dumps({"nonce": secrets.token_hex(32), "evidence": {"type": "sim"},
                               "public_key": b64e(secrets.token_bytes(32))})
            return http.request("POST", url + "/v1/enclave/attest", body=body, headers=json_h).status
        return http.request("POST", url + "/v1/enclave/keys", body=b'{"model_id": "m"}',
                            headers={**json_h, "Authorization": "Bearer " + secrets.token_hex(32)}).status

    statuses: dict[int, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for status in pool.map(one, range(n)):
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def _run(tmp_path, n: int) -> None:
    srv = start_keyservice(tmp_path)
    try:
        pin = attest_key_service(srv.url, insecure_sim=True)
        db = tmp_path / "ks" / "ks.db"
        before = _counts(db)
        t0 = time.monotonic()
        statuses = _flood(srv.url, pin.audience, n)
        elapsed = time.monotonic() - t0
        after = _counts(db)
        assert 500 not in statuses, statuses
        growth = {t: after[t] - before[t] for t in TABLES}
        print(f"\nflood of {n} anonymous requests in {elapsed:.1f} s: answers {dict(sorted(statuses.items()))}; "
              f"table growth {growth}")
        # Registrations: a burst of 100, then 1/s per address.
        assert growth["principals"] <= 100 + elapsed + 1, growth
        assert growth["call_seqs"] <= growth["principals"]
        # Nonces: a burst of 200, then 20/s per address (and a cap, purged on a timer).
        assert growth["att_nonces"] <= 200 + 20 * elapsed + 1, growth
        # Audit (the ledger): two entries per new principal, its row and its call sequence number's
        # (every sealed write is a ledger entry, docs/keyservice.md); refusals are counted,
        # not written one by one.
        assert growth["audit"] <= 2 * growth["principals"] + 10, growth
        assert growth["tokens"] == 0 and growth["models"] == growth["grants"] == growth["request_keys"] == 0
    finally:
        srv.stop()


def test_a_flood_of_1000_anonymous_requests_grows_no_table_without_bound(tmp_path):
    _run(tmp_path, 1000)


@pytest.mark.soak
def test_a_flood_of_10000_anonymous_requests(tmp_path):
    _run(tmp_path, 10_000)
