"""The client's call counter: persisted, 0600, never repeats a number."""

from __future__ import annotations

import stat
import threading

import pytest

from sesemi.call_seq import FileCallCounter
from sesemi.errors import FormatError
from sesemi.identity import Identity


def test_numbers_increase_across_instances_and_threads(tmp_path):
    pid = Identity.generate("a").principal_id
    drawn: list[int] = []

    def draw():
        c = FileCallCounter(tmp_path)  # as separate `sesemi` runs would
        for _ in range(20):
            drawn.append(c.next(pid))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(drawn) == list(range(1, 81))
    assert stat.S_IMODE((tmp_path / pid).stat().st_mode) == 0o600
    assert FileCallCounter(tmp_path).next_after(pid, 500) == 501
    assert FileCallCounter(tmp_path).next(pid) == 502


def test_a_damaged_counter_is_one_clear_error(tmp_path):
    pid = Identity.generate("a").principal_id
    (tmp_path / pid).write_text("\u00b2")
    with pytest.raises(FormatError, match="damaged"):
        FileCallCounter(tmp_path).next(pid)



def test_a_second_process_waits_a_bounded_time_for_a_call_in_flight(tmp_path):
    """sending() holds across processes (an flock), and waiting for it is
    bounded: the error names what it waited for."""
    from sesemi.errors import TimeoutExpired

    pid = Identity.generate("a").principal_id
    with FileCallCounter(tmp_path).sending(pid, 1.0):
        with pytest.raises(TimeoutExpired, match="signed call in flight") as info:
            with FileCallCounter(tmp_path).sending(pid, 0.1):
                pass
        assert info.value.bound == "budget"
    with FileCallCounter(tmp_path).sending(pid, 0.1):  # released: the next one goes ahead
        pass
