"""Figures the reliability suites measure, printed at the end of the run
(docs/reliability.md quotes them): cases tried, flips made and detected,
kills survived, operations lost, bounds measured."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings

FIGURES: Counter[str] = Counter()
NOTES: dict[str, str] = {}


def count(name: str, n: int = 1) -> None:
    FIGURES[name] += n


def note(name: str, text: str) -> None:
    NOTES[name] = text


def twin(*strategies: Any, fast: int, soak: int) -> Callable[[Callable], tuple[Callable, Callable]]:
    """The same property twice: `fast` examples in `make test`, `soak` in `make soak`.
    No example database: nothing is written to the work tree."""
    # No shrinking: a failure is reported with the example as found, in bounded time.
    common = dict(deadline=None, database=None, derandomize=False,
                  phases=(Phase.explicit, Phase.reuse, Phase.generate),
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                         HealthCheck.data_too_large, HealthCheck.filter_too_much])

    def deco(body: Callable) -> tuple[Callable, Callable]:
        fast_t = settings(max_examples=fast, **common)(given(*strategies)(body))

        @functools.wraps(body)
        def again(*a: Any, **k: Any) -> Any:
            return body(*a, **k)

        soak_t = pytest.mark.soak(settings(max_examples=soak, **common)(given(*strategies)(again)))
        return fast_t, soak_t

    return deco
