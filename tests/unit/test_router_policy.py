"""The router's policies (pure, with an injected clock) and the live router's
queueing and retry logic against a fake OpenWhisk client."""

from __future__ import annotations

import threading
import time

import pytest

from router.config import parse
from router.policy import PackedPool, PolicyParams, PrototypePool
from router.service import Router
from sesemi.errors import FormatError, NotFound, UnavailableError
from sesemi.openwhisk import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS, Activation

ACTIONS = [f"a{i}" for i in range(1, 6)]


def test_busy_model_claims_and_releases_after_idle_multiple():
    pool = PackedPool(ACTIONS, PolicyParams(share_limit=4))
    a = pool.acquire("hot", 0.0)
    assert pool.acquire("hot", 0.0) == a                    # its second request in flight: it claims the action
    assert pool.actions[a].claimed_by == "hot"
    other = pool.acquire("rare", 0.0)
    assert other != a                                        # others avoid the claimed action
    pool.release("rare", other, 0.1, 0.1)
    pool.release("hot", a, 1.0, 0.5)
    pool.release("hot", a, 1.0, 0.5)                         # idle from t=1, last exec 0.5 s: held until t=2
    assert pool.next_change(1.0) == pytest.approx(2.0)
    pool.acquire("x", 1.5)
    assert pool.actions[a].claimed_by == "hot"
    pool.acquire("y", 2.01)
    assert pool.actions[a].claimed_by is None and pool.models["hot"].claim is None


def test_rare_models_share_the_warm_action_and_keep_affinity():
    pool = PackedPool(ACTIONS, PolicyParams(share_limit=4))
    first = pool.acquire("m1", 0.0)
    pool.release("m1", first, 0.1, 0.05)
    for i, t in enumerate([1.0, 2.0, 3.0]):                  # one at a time: all on the one warm action
        a = pool.acquire(f"r{i}", t)
        assert a == first
        pool.release(f"r{i}", a, t + 0.05, 0.05)
    # Two at once from different models: they share it (room for 4), nobody claims.
    a, b = pool.acquire("r0", 4.0), pool.acquire("r1", 4.0)
    assert a == b == first and pool.actions[first].claimed_by is None


def test_full_pool_waits_and_borrows_before_that():
    pool = PackedPool(ACTIONS[:2], PolicyParams(share_limit=2))
    a = pool.acquire("hot", 0.0)
    pool.acquire("hot", 0.0)                                 # claims a, now full (limit 2)
    assert pool.actions[a].claimed_by == "hot"
    b = pool.acquire("m2", 0.0)
    c = pool.acquire("m3", 0.0)
    assert b == c != a                                       # the unclaimed one, shared, now full too
    assert pool.acquire("m4", 0.0) is None                   # every action at its limit: wait
    pool.release("hot", a, 0.5, 0.5)
    assert pool.acquire("m4", 0.5) == a                      # borrows the claimed action's free slot


def test_retry_prefers_another_action():
    pool = PackedPool(ACTIONS[:2])
    a = pool.acquire("m", 0.0)
    pool.release("m", a, 0.1, None)
    assert pool.acquire("m", 0.2, exclude=frozenset({a})) != a


def test_prototype_fails_with_all_busy():
    pool = PrototypePool(ACTIONS)
    assert not pool.queues
    got = [pool.acquire(f"m{i}", 0.0) for i in range(5)]
    assert got == ACTIONS                                    # first free action each, one model per action
    assert pool.acquire("m5", 0.0) is None                   # "All Busy"
    assert pool.acquire("m0", 0.0) == ACTIONS[0]             # its own second request follows it, and claims
    assert pool.actions[ACTIONS[0]].claimed_by == "m0"


def test_config_validation():
    ok = parse({"packs": [{"name": "p", "models": ["a"], "actions": ["x"]}], "policy": {"share_limit": 2}})
    assert ok.policy.claim_limit == 2 and ok.pack_of() == {"a": "p"}
    for bad, msg in [({"packs": []}, "at least one pack"),
                     ({"packs": [{"models": ["a"], "actions": ["x"]}, {"models": ["a"], "actions": ["y"]}]},
                      "more than one pack"),
                     ({"packs": [{"models": ["a"], "actions": ["x"]}], "policy": {"nope": 1}}, "unknown policy"),
                     ({"packs": [{"models": ["a"], "actions": ["x"]}], "max_attempts": 0}, "positive"),
                     ({"packs": [{"models": ["a/b"], "actions": ["x"]}]}, "model id")]:
        with pytest.raises(FormatError, match=msg):
            parse(bad)


def _act(status: str, result: dict, duration: int = 5, cold: bool = False) -> Activation:
    return Activation("id", "n", status, result, 0, duration, duration, {"initTime": 1} if cold else {})


class FakeOpenWhisk:
    """Answers per action from a script; records what it was sent."""

    def __init__(self, script: dict[str, list], delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def invoke(self, name: str, params: dict, timeout_s: float | None = None) -> Activation:
        with self.lock:
            self.calls.append((name, params))
            queue = self.script.get(name) or [_act(SUCCESS, {"response": {"ok": name}})]
            item = queue.pop(0) if len(queue) > 1 else queue[0]
        time.sleep(self.delay)
        if isinstance(item, Exception):
            raise item
        return item


def _router(fake, **settings) -> Router:
    cfg = parse({"packs": [{"name": "p", "models": ["m1", "m2", "m3"], "actions": ["a1", "a2"]}],
                 "policy": {"share_limit": 1}, **settings})
    return Router(cfg, fake)


ENVELOPE = {"v": 3, "model_id": "m1", "user_id": "u", "request_id": "r", "nonce": "bm9uY2U=",
            "ciphertext": "Y2lwaGVydGV4dA=="}


def test_router_forwards_the_envelope_untouched_and_retries_elsewhere():
    fake = FakeOpenWhisk({"a1": [_act(DEVELOPER_ERROR, {"error": "The action did not produce a valid response "
                                                               "and exited unexpectedly."})],
                          "a2": [_act(SUCCESS, {"response": {"ok": 2}, "tee": "sim"})]})
    router = _router(fake)
    reply = router.infer(dict(ENVELOPE))
    assert reply.status == 200 and reply.body == {"response": {"ok": 2}, "tee": "sim"}
    assert [c[0] for c in fake.calls] == ["a1", "a2"] and all(c[1] == ENVELOPE for c in fake.calls)
    assert router.counters["retries"] == 1 and reply.headers["X-Sesemi-Attempts"] == "2"


def test_router_passes_refusals_through_and_gives_up_clearly():
    # What OpenWhisk keeps of an action's refusal: {"error": {kind, status, message}}.
    denied = {"error": {"kind": "AccessDenied", "status": 403, "message": "inference: access denied"}}
    fake = FakeOpenWhisk({"a1": [_act(APPLICATION_ERROR, denied)]})
    reply = _router(fake).infer(dict(ENVELOPE))
    # Forwarded as it is (a sealed refusal carries the user's envelope inside).
    assert reply.status == 403 and reply.body == denied and len(fake.calls) == 1
    # A retryable kind is tried on another action; the platform's own string error is a 502.
    down = {"error": {"kind": "UnavailableError", "status": 503, "message": "key service: cannot reach"}}
    fake = FakeOpenWhisk({"a1": [_act(APPLICATION_ERROR, down)], "a2": [_act(SUCCESS, {"response": {}})]})
    assert _router(fake, max_attempts=2).infer(dict(ENVELOPE)).status == 200 and len(fake.calls) == 2
    fake = FakeOpenWhisk({"a1": [_act(APPLICATION_ERROR, {"error": "response too large"})]})
    reply = _router(fake).infer(dict(ENVELOPE))
    assert reply.status == 502 and len(fake.calls) == 1
    fake = FakeOpenWhisk({a: [UnavailableError("invoke: cannot reach OpenWhisk")] for a in ("a1", "a2")})
    reply = _router(fake, max_attempts=2).infer(dict(ENVELOPE))
    assert reply.status == 503 and reply.body["kind"] == "UnavailableError"
    assert "2 attempt(s)" in reply.body["error"] and "cannot reach OpenWhisk" in reply.body["error"]
    with pytest.raises(NotFound):
        _router(fake).infer({**ENVELOPE, "model_id": "other"})
    with pytest.raises(FormatError):
        _router(fake).infer({**ENVELOPE, "model_id": "../x"})


def test_router_queues_when_all_busy_then_serves_or_times_out():
    fake = FakeOpenWhisk({}, delay=0.3)
    router = _router(fake, queue_timeout_s=5)
    replies = []
    threads = [threading.Thread(target=lambda m=m: replies.append(router.infer({**ENVELOPE, "model_id": m})))
               for m in ("m1", "m2", "m3")]                # 3 requests, 2 actions of 1 slot: one waits
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in replies] == [200, 200, 200] and router.counters["queued"] == 1
    slow = FakeOpenWhisk({}, delay=1.0)
    router = _router(slow, queue_timeout_s=0.3)
    replies = []
    threads = [threading.Thread(target=lambda m=m: replies.append(router.infer({**ENVELOPE, "model_id": m})))
               for m in ("m1", "m2", "m3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in replies) == [200, 200, 503]
    assert any("queue bound" in r.body.get("error", "") for r in replies)


def test_config_file_json_or_yaml(tmp_path):
    from router.config import load

    pytest.importorskip("yaml")
    (tmp_path / "r.yaml").write_text("packs:\n  vision:\n    models: [m1, m2]\n    actions: [a1, a2]\n"
                                     "policy: {share_limit: 2, kind: prototype}\nmax_attempts: 2\n")
    cfg = load(tmp_path / "r.yaml")
    assert cfg.pack_of() == {"m1": "vision", "m2": "vision"} and cfg.policy_kind == "prototype"
    assert cfg.max_attempts == 2 and cfg.policy.share_limit == 2
    (tmp_path / "r.json").write_text('{"packs": [{"models": ["m1"], "actions": ["a1"]}]}')
    assert load(tmp_path / "r.json").packs[0].actions == ("a1",)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FormatError, match="invalid JSON"):
        load(tmp_path / "bad.json")
