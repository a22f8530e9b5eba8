"""How long an action keeps using a released key (issue 13, items 4 and 5),
against a real key service and action:

- a count stated (signed) in each release bounds a revoked grant even while
  the key TTL, on the enclave's (the host's) clock, has not run out;
- a request naming a newer request-key version makes the action fetch it at
  once, and the old version stops working there.
"""

from __future__ import annotations

import numpy as np
import pytest

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
    client = ActionClient(act.url)
    client.infer("digits", user.principal_id, old, X, key_version=v_old)
    new = world.enroll(user, "digits")
    v_new = world.key_versions[(user.principal_id, "digits")]
    assert v_new == v_old + 1
    client.infer("digits", user.principal_id, new, X, key_version=v_new)  # no wait for the TTL
    with pytest.raises(SesemiError):
        client.infer("digits", user.principal_id, old, X, key_version=v_old)  # the old key is done here
