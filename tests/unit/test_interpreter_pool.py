"""The action's interpreter pool: most recently used first, growth only when
requests overlap, never more than its size, waiters woken on release."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from app.interpreter_pool import InterpreterPool
from sesemi.errors import FormatError

DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits" / "digits.tflite"


@pytest.fixture(scope="module")
def content() -> bytes:
    return DIGITS.read_bytes()


def test_most_recently_released_goes_out_first(content):
    pool = InterpreterPool(content, size=2)
    with pool.interpreter() as a:
        with pool.interpreter() as b:  # overlapping: the pool grows to 2
            assert a is not b
        # b released last: a FIFO would hand out a (the older) next, moving one
        # client's work between interpreters on every request.
    with pool.interpreter() as c:
        assert c is a
    with pool.interpreter() as d, pool.interpreter() as e:
        assert {d, e} == {a, b}
    for _ in range(3):
        with pool.interpreter() as f:
            assert f is d  # released last above (exits run inner first: e, then d)


def test_one_client_never_builds_a_second_interpreter(content):
    pool = InterpreterPool(content, size=4)
    x = np.zeros((1, 8, 8, 1), np.float32)
    for _ in range(5):
        pool.run({"x": x})
    assert pool._built == 1 and len(pool.invoke_s) == 5


def test_at_size_a_caller_waits_for_a_release(content):
    pool = InterpreterPool(content, size=1)
    got: list = []
    with pool.interpreter() as a:
        t = threading.Thread(target=lambda: got.append(pool.interpreter().__enter__()))
        t.start()
        t.join(0.3)
        assert t.is_alive() and not got  # no second interpreter beyond the size
    t.join(10)
    assert got == [a] and pool._built == 1


def test_not_a_model_is_refused_at_load():
    with pytest.raises(FormatError, match="does not load as TFLite"):
        InterpreterPool(b"not a tflite model", size=2)
