"""Signed calls v2 against the key service's HTTP layer with a clock the test
controls (issue 13 items 1-3 and 24; issue 12 §1 timestamps): replay
protection rests on per-principal sequence numbers, not on the host's clock
or on restarts, and only one spelling of a signed target is accepted."""

from __future__ import annotations

import pytest

from keyservice import KeyService, KeyServiceConfig, create_app
from sesemi import hpke_box, signed_call
from sesemi.encoding import b64e, json_dumps
from sesemi.identity import Identity

MR = "ab" * 32
SEAL = "5e" * 16
T0 = 1_800_000_000.0


class Service:
    def __init__(self, db, now: float) -> None:
        self.db, self.now = db, [now]
        self.start()

    def start(self) -> None:
        self.ks = KeyService(KeyServiceConfig(db_path=self.db, insecure_sim_attestation=True),
                             clock=lambda: self.now[0])
        self.ks.store.purge_expired(self.ks.clock())  # what `serve` does at start-up
        self.http = create_app(self.ks).test_client()

    def headers(self, who: Identity, method: str, target: str, body: bytes = b"", seq: int = 1,
                at: float | None = None) -> dict[str, str]:
        return signed_call.sign(who, method, target, self.ks.audience, body, self.now[0] if at is None else at, seq)

    def call(self, method: str, target: str, headers: dict[str, str], body: bytes = b""):
        return self.http.open(target, method=method, headers=headers, data=body)

    def register(self, who: Identity, seq: int = 1, at: float | None = None):
        body = json_dumps({"public_key": b64e(who.public_raw)})
        h = self.headers(who, "POST", "/v1/principals", body, seq, at)
        return self.call("POST", "/v1/principals", h, body), h, body


def _publish(svc: Service, owner: Identity) -> None:
    box = hpke_box.seal(b"k" * 32, svc.ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, SEAL))
    svc.ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": {"mrenclave": [MR]},
                                              "seal_id": SEAL})


def test_restart_and_clock_games_do_not_reopen_a_revocation(tmp_path):
    """Item 1: a recorded grant replayed after a restart with the clock ahead and
    then set back (so that any clock-based purge has run) is still refused."""
    svc = Service(tmp_path / "ks.db", T0)
    owner, user = Identity.generate("o"), Identity.generate("u")
    assert svc.register(owner)[0].status_code == 200
    assert svc.register(user)[0].status_code == 200
    _publish(svc, owner)
    target = f"/v1/models/m/grants/{user.principal_id}"
    grant = svc.headers(owner, "PUT", target, seq=2)
    assert svc.call("PUT", target, grant).status_code == 200
    revoke = svc.headers(owner, "DELETE", target, seq=3)
    assert svc.call("DELETE", target, revoke).status_code == 200
    for clock in (T0 + 86_400, T0 + 5):  # restart far ahead, then set back within the window
        svc.now[0] = clock
        svc.start()
    r = svc.call("PUT", target, grant)
    assert r.status_code == 409 and r.get_json()["kind"] == "StaleSequence", r.get_json()
    assert r.get_json()["last_seq"] == 3
    assert svc.ks.get_model(owner.principal_id, "m")["grants"] == []


def test_a_withheld_call_delivered_after_a_later_one_is_refused(tmp_path):
    """Reorder: the network holds back a grant and delivers it after the revoke
    that followed it; it must not re-grant."""
    svc = Service(tmp_path / "ks.db", T0)
    owner, user = Identity.generate("o"), Identity.generate("u")
    svc.register(owner)
    svc.register(user)
    _publish(svc, owner)
    target = f"/v1/models/m/grants/{user.principal_id}"
    withheld = svc.headers(owner, "PUT", target, seq=2)
    assert svc.call("PUT", target, svc.headers(owner, "PUT", target, seq=3)).status_code == 200  # the retry
    assert svc.call("DELETE", target, svc.headers(owner, "DELETE", target, seq=4)).status_code == 200
    assert svc.call("PUT", target, withheld).status_code == 409
    assert svc.ks.get_model(owner.principal_id, "m")["grants"] == []


def test_one_principal_cannot_lock_out_another(tmp_path):
    """Item 2: a fresh key's registration dated 115 s ahead moves no shared mark."""
    svc = Service(tmp_path / "ks.db", T0)
    owner = Identity.generate("o")
    assert svc.register(owner, at=T0 - 10)[0].status_code == 200
    assert svc.register(Identity.generate("attacker"), at=T0 + 115)[0].status_code == 200
    h = svc.headers(owner, "GET", "/v1/audit", seq=2, at=T0 - 10)  # a client 10 s behind
    assert svc.call("GET", "/v1/audit", h).status_code == 200


def test_registration_cannot_be_filed_under_another_principal(tmp_path):
    """Item 3: the principal id is signed and must be the registered key's."""
    svc = Service(tmp_path / "ks.db", T0)
    victim, key = Identity.generate("v"), Identity.generate("k")
    assert svc.register(victim)[0].status_code == 200
    _, h, body = svc.register(key)  # recorded...
    for pid in (victim.principal_id, Identity.generate("x").principal_id):
        r = svc.call("POST", "/v1/principals", {**h, signed_call.H_PRINCIPAL: pid}, body)
        assert r.status_code == 401, r.get_json()
    # ...and replayed as it was: refused by its sequence number.
    assert svc.call("POST", "/v1/principals", h, body).status_code == 409


@pytest.mark.parametrize("signed,sent", [
    ("/v1/audit?model_id=m", "/v1/audit?model_id=m??"),
    ("/v1/audit?model_id=m", "/v1/audit?model_id=m?"),
    ("/v1/models/m", "/v1/models/%6d"),
])
def test_only_the_signed_spelling_of_a_target_is_accepted(tmp_path, signed, sent):
    """Item 24: the raw target is verified; other spellings are refused before routing."""
    svc = Service(tmp_path / "ks.db", T0)
    owner = Identity.generate("o")
    svc.register(owner)
    _publish(svc, owner)
    method = "GET"
    r = svc.call(method, sent, svc.headers(owner, method, signed, seq=2))
    assert r.status_code in (400, 401), (r.status_code, r.get_json())
    assert svc.call(method, signed, svc.headers(owner, method, signed, seq=3)).status_code == 200


def test_the_principal_id_is_in_the_signed_message(tmp_path):
    svc = Service(tmp_path / "ks.db", T0)
    a = Identity.generate("a")
    svc.register(a)
    h = svc.headers(a, "GET", "/v1/audit", seq=2)
    msg = signed_call._message(a.principal_id, "GET", "/v1/audit", svc.ks.audience, h[signed_call.H_TIMESTAMP],
                               "2", h[signed_call.H_NONCE], b"")
    assert a.principal_id.encode() in msg


@pytest.mark.parametrize("field,value", [
    (signed_call.H_TIMESTAMP, "1\u00b2"), (signed_call.H_TIMESTAMP, "9" * 400), (signed_call.H_TIMESTAMP, "-5"),
    (signed_call.H_SEQ, "\u0661"), (signed_call.H_SEQ, "9" * 40), (signed_call.H_SEQ, "0"), (signed_call.H_SEQ, "01"),
    (signed_call.H_SEQ, str(2**63)),
])
def test_malformed_numbers_get_401_not_500(tmp_path, field, value):
    """Issue 12 §1: Unicode digits and 400-digit timestamps raised in int()/abs()."""
    svc = Service(tmp_path / "ks.db", T0)
    who = Identity.generate("o")
    body = json_dumps({"public_key": b64e(who.public_raw)})
    h = {**svc.headers(who, "POST", "/v1/principals", body), field: value}
    r = svc.call("POST", "/v1/principals", h, body)
    assert r.status_code == 401 and r.get_json()["error"], (r.status_code, r.data)


def test_a_counter_that_fell_behind_is_told_the_last_number(tmp_path):
    svc = Service(tmp_path / "ks.db", T0)
    a = Identity.generate("a")
    svc.register(a, seq=500)
    r = svc.register(a, seq=7)[0]
    assert r.status_code == 409 and r.get_json()["last_seq"] == 500


def test_a_signed_read_claims_no_sequence_number_and_appends_nothing(tmp_path):
    """A read changes nothing, so it needs no sequence number (its answer is bound
    to its own nonce) and appends no leaf: reads cannot grow the log."""
    svc = Service(tmp_path / "ks.db", T0)
    a = Identity.generate("a")
    svc.register(a, seq=500)
    size = svc.ks.store.head().size
    for seq in (7, 7, 3):
        assert svc.call("GET", "/v1/audit", svc.headers(a, "GET", "/v1/audit", seq=seq)).status_code == 200
    assert svc.ks.store.head().size == size
    assert svc.register(a, seq=501)[0].status_code == 200  # the write order is untouched
