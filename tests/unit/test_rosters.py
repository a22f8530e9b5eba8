"""The action refuses users its model's roster does not list without the key
service and without a shared budget (docs/protocol.md, "Refusing without the
key service"); the roster's format, paging and changes."""

from __future__ import annotations

import os

import pytest

from app.enclave_session import EnclaveSession
from app.rosters import EARLY_S
from sesemi import envelope, hpke_box, roster
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.errors import AccessDenied, FormatError, UnavailableError


class _Ks:
    """A stand-in key service: `members` (user -> version) is the truth; it
    records every call. Releases are wrapped to the session's key as the real
    one does (keyservice/service.py release_keys)."""

    def __init__(self, members: dict[str, int], page: int = roster.PAGE) -> None:
        self.members, self.page = dict(members), page
        self.calls: list[tuple] = []
        self.seq, self.changed = 1, {}  # user -> seq of the change
        self.session: EnclaveSession | None = None
        self.down = False

    def set(self, user: str, version: int) -> None:
        self.seq += 1
        self.changed[user] = self.seq
        if version:
            self.members[user] = version
        else:
            self.members.pop(user, None)

    def nonce(self, deadline):
        return os.urandom(32)

    def attest(self, nonce, evidence, public_key, deadline):
        return "token", 600

    def keys(self, token, model_id, user_id, want_model, deadline, seal_id=None):
        self.calls.append(("keys", user_id))
        if self.down:
            raise UnavailableError("key service unreachable")
        if user_id not in self.members:
            raise AccessDenied("not granted")
        v = self.members[user_id]
        pub = self.session.public_key
        box = hpke_box.seal(b"k" * 31 + bytes([v]), pub,
                            hpke_box.info("release-request-key", model_id, user_id, str(v)))
        return {"max_requests": 10_000, "request_key_version": v, "request_key": b64e(box)}

    def roster(self, token, model_id, since, after, deadline):
        self.calls.append(("roster", since, after))
        if self.down:
            raise UnavailableError("key service unreachable")
        out = {"model_id": model_id, "seq": self.seq}
        if since is not None:
            users = [u for u, s in self.changed.items() if s > since]
            return {**out, "since": since,
                    "records": roster.encode((roster.id_hash(model_id, u), self.members.get(u, 0)) for u in users)}
        users = sorted(u for u in self.members if u > after)[:self.page]
        return {**out, "after": after, "next": users[-1] if len(users) == self.page else None,
                "records": roster.encode((roster.id_hash(model_id, u), self.members[u]) for u in users)}


def _session(ks: _Ks, now: list[float]) -> EnclaveSession:
    s = EnclaveSession(SimBackend("ab" * 32), ks, key_ttl_s=60, clock=lambda: now[0])
    ks.session = s
    return s


def _key_calls(ks: _Ks) -> list:
    return [c for c in ks.calls if c[0] == "keys"]


def test_junk_naming_unlisted_users_costs_no_key_release_and_denies_no_one():
    """Old code: every new id cost a release until a shared bucket ran dry, then
    every new user, honest ones included, was refused "retry"."""
    now = [1000.0]
    ks = _Ks({f"user-{i}": 1 for i in range(20)})
    session = _session(ks, now)
    for i in range(5000):  # junk: ever-new ids, some not even principal ids
        with pytest.raises(AccessDenied):
            session.keys("m", f"junk-{i}" if i % 2 else os.urandom(8).hex(), need_model_key=False)
    assert _key_calls(ks) == []
    assert len([c for c in ks.calls if c[0] == "roster"]) == 1  # the clock stood still: no early refresh
    for i in range(20):  # every honest first request is served
        _, rk = session.keys("m", f"user-{i}", need_model_key=False, key_version=1)
        assert rk is not None
    assert len(_key_calls(ks)) == 20


def test_refusals_are_alike_whatever_is_cached():
    """Listed or not, held or not, warm or cold: the one refusal (the caller of
    keys() answers every AccessDenied alike, app/runtime.py)."""
    now = [1000.0]
    ks = _Ks({"held": 1, "cold": 1})
    session = _session(ks, now)
    session.keys("m", "held", need_model_key=False)
    kinds = set()
    for _ in range(3):
        for user in ("stranger", "malformed id", "x" * 128):
            try:
                session.keys("m", user, need_model_key=False)
            except Exception as exc:  # noqa: BLE001 - the kind is what is compared
                kinds.add(type(exc).__name__)
        now[0] += EARLY_S
    assert kinds == {"AccessDenied"}
    # The key service down: an unlisted user is still refused alike, from the held roster.
    ks.down = True
    with pytest.raises(AccessDenied):
        session.keys("m", "stranger", need_model_key=False)


def test_grants_revocations_and_re_enrolments_reach_the_roster():
    now = [1000.0]
    ks = _Ks({"a": 1})
    session = _session(ks, now)
    session.keys("m", "a", need_model_key=False)
    ks.set("b", 1)  # granted and enrolled after the roster was read
    now[0] += EARLY_S  # the early refresh: changes since the roster's log size
    _, rk = session.keys("m", "b", need_model_key=False)
    assert rk is not None and ks.calls[-2][:2] == ("roster", 1)
    ks.set("a", 2)  # re-enrolled: the roster lists version 2, so the held version 1 is refetched
    now[0] += EARLY_S
    junk_before = len(_key_calls(ks))
    for _ in range(50):  # junk naming "a" with an ever higher claimed version: no refetch beyond one
        session.keys("m", "a", need_model_key=False, key_version=999)
    assert len(_key_calls(ks)) == junk_before + 1
    assert session.cache.peek(("r", "m", "a"))[1] == 2
    ks.set("b", 0)  # revoked: off the roster at the next refresh (within the key TTL)
    now[0] += 30.0
    with pytest.raises(AccessDenied):
        session.keys("m", "b", need_model_key=False)


def test_roster_pages_and_a_stale_roster_refuses_everyone_alike():
    now = [1000.0]
    ks = _Ks({f"u{i:03d}": 1 for i in range(25)}, page=10)
    session = _session(ks, now)
    session.keys("m", "u024", need_model_key=False)
    assert [c[2] for c in ks.calls if c[0] == "roster"] == ["", "u009", "u019"]
    ks.down = True
    now[0] += 61.0  # no refresh for the key TTL: the roster is dropped
    for user in ("u000", "stranger"):
        with pytest.raises(UnavailableError, match="roster"):
            session.keys("m", user, need_model_key=False)


def test_roster_records_round_trip_and_are_bounded():
    members = {roster.id_hash("m", f"u{i}"): i + 1 for i in range(10_000)}
    r = roster.Roster("m", roster.decode(roster.encode(members.items())))
    assert len(r) == 10_000 and r.version_of("u17") == 18 and r.version_of("u10000") is None
    r.add([(roster.id_hash("m", "u17"), 0), (roster.id_hash("m", "new"), 3)])
    assert r.version_of("u17") is None and r.version_of("new") == 3 and len(r) == 10_000
    assert roster.id_hash("m", "u1") != roster.id_hash("m2", "u1")  # hashed per model
    with pytest.raises(FormatError):
        roster.decode(b64e(b"x" * 21))
    assert envelope.MAX_KEY_VERSION < 1 << 32  # every version fits a record
