"""How long an action keeps using a released key (issue 13, items 4 and 5),
against a real key service and action:

- a count stated (signed) in each release bounds a revoked grant even while
  the key TTL, on the enclave's (the host's) clock, has not run out;
- a request naming a newer request-key version makes the action fetch it
  within a second (its roster's early refresh), and the old version stops
  working there.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.rosters import EARLY_S
from sesemi.client import ActionClient
from sesemi.errors import SesemiError

from ..conftest import make_world

X = {"image": np.zeros((1, 8, 8, 1), np.float32)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("bounds"), ks_args=("--release-max-requests", "3"))
    yield w
    w.stop()


def _stats(srv) -> dict:
    import requests

    return requests.get(srv.url + "/stats", timeout=10).json()


@pytest.fixture(scope="module")
def act(world):
    return world.action()  # key TTL 60 s: only the count can end a key's use in these tests


def test_a_released_key_serves_at_most_the_stated_number_of_requests(world, act):
    user = world.new_user("counted")
    world.ks.grant(world.owner, "digits", user.principal_id)
    rk = world.enroll(user, "digits")
    time.sleep(EARLY_S)  # a grant takes effect at a warm action within its roster's early refresh
    client = ActionClient(act.url)
    for _ in range(3):
        client.infer("digits", user.principal_id, rk, X)
    fetches = _stats(act)["key_fetches"]
    client.infer("digits", user.principal_id, rk, X)  # the 4th: fetched again
    assert _stats(act)["key_fetches"] == fetches + 1
    world.ks.revoke(world.owner, "digits", user.principal_id)
    for _ in range(2):
        client.infer("digits", user.principal_id, rk, X)  # uses 2 and 3 of the last release
    with pytest.raises(SesemiError):
        client.infer("digits", user.principal_id, rk, X)  # within the TTL, yet refused: revoked


def test_re_enrolment_takes_effect_on_the_next_request(world, act):
    user = world.new_user("rotates")
    world.ks.grant(world.owner, "digits", user.principal_id)
    old = world.enroll(user, "digits")
    v_old = world.key_versions[(user.principal_id, "digits")]
    time.sleep(EARLY_S)
    client = ActionClient(act.url)
    client.infer("digits", user.principal_id, old, X, key_version=v_old)
    new = world.enroll(user, "digits")
    v_new = world.key_versions[(user.principal_id, "digits")]
    assert v_new == v_old + 1
    time.sleep(EARLY_S)  # the roster's early refresh, at most one a second, sees the new version
    client.infer("digits", user.principal_id, new, X, key_version=v_new)  # no wait for the TTL
    with pytest.raises(SesemiError):
        client.infer("digits", user.principal_id, old, X, key_version=v_old)  # the old key is done here


def test_junk_claiming_a_newer_key_version_costs_no_refetch(world, act):
    """`kv` comes unauthenticated: the action refetches a request key only when
    the model's roster lists a newer version than the one it holds, so junk
    claiming one costs no key fetch beyond the count's (in this world every 3rd
    use ends a release's count, junk included: it is counted conservatively),
    and no bucket that the user's own re-enrolment would need."""
    import requests

    from sesemi import envelope, tensors
    from sesemi.encoding import json_dumps

    user = world.new_user("targeted")
    world.ks.grant(world.owner, "digits", user.principal_id)
    rk = world.enroll(user, "digits")
    time.sleep(EARLY_S)  # a grant takes effect at a warm action within its roster's early refresh
    ActionClient(act.url).infer("digits", user.principal_id, rk, X)  # the action now holds version 1
    before = _stats(act)["key_fetches"]
    for _ in range(30):  # with 3 uses per release, some 10 fetches are the count's
        junk = envelope.seal(envelope.new_request_key(), "digits", user.principal_id, envelope.new_request_id(),
                             envelope.REQUEST, tensors.encode(X), key_version=999)
        r = requests.post(act.url + "/run", data=json_dumps({"value": junk.to_json()}),
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert "error" in r.json() and "response" not in r.json(), r.text
    assert _stats(act)["key_fetches"] - before <= 30 / 3 + 1
    # The user re-enrols: served at once after the roster's early refresh, junk or not.
    new = world.enroll(user, "digits")
    time.sleep(EARLY_S)
    ActionClient(act.url).infer("digits", user.principal_id, new, X,
                                key_version=world.key_versions[(user.principal_id, "digits")])
