"""A request no action can serve may not cost `max_attempts` activations:
retries come from a budget, a share of requests plus a floor a second
(router/retry_budget.py)."""

from __future__ import annotations

import time

from router.retry_budget import RetryBudget
from sesemi.openwhisk import APPLICATION_ERROR, SUCCESS

from .test_router_policy import ENVELOPE, FakeOpenWhisk, _act, _router

DOWN = {"error": {"kind": "UnavailableError", "status": 503, "message": "key service: too busy; retry"}}


def test_a_flood_no_action_can_serve_costs_at_most_1_2_activations_each():
    fake = FakeOpenWhisk({a: [_act(APPLICATION_ERROR, DOWN)] for a in ("a1", "a2")})
    router = _router(fake, max_attempts=3)
    n = 1000
    t0 = time.monotonic()
    for _ in range(n):
        assert router.infer(dict(ENVELOPE)).status == 503
    budget = router.retry_budget
    # The old router: 3 activations for each (3,000).
    bound = n * (1 + budget.percent) + budget.cap + budget.min_per_s * (time.monotonic() - t0) + 1
    assert len(fake.calls) <= bound, (len(fake.calls), bound)
    assert router.counters["retries_unbudgeted"] > 0


def test_an_occasional_failure_is_still_retried():
    fake = FakeOpenWhisk({"a1": [_act(APPLICATION_ERROR, DOWN)], "a2": [_act(SUCCESS, {"response": {}})]})
    router = _router(fake, max_attempts=2)
    for _ in range(20):
        assert router.infer(dict(ENVELOPE)).status in (200, 503)
    assert router.counters["retries"] >= 1 and router.counters["retries_unbudgeted"] == 0


def test_budget_accrues_per_request_and_per_second():
    now = [0.0]
    b = RetryBudget(0.2, 1.0, clock=lambda: now[0], window_s=2.0)
    assert [b.withdraw() for _ in range(3)] == [True, True, False]  # the floor's window: 2
    for _ in range(11):
        b.deposit()
    assert [b.withdraw() for _ in range(3)] == [True, True, False]  # 11 requests: 2 retries
    now[0] += 1.0
    assert b.withdraw() and not b.withdraw()  # 1 a second
