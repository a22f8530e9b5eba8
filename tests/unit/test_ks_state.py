"""Clients as witnesses of the key service's state version (sesemi/ks_state.py)."""

import pytest

from sesemi.errors import FormatError, IntegrityError, RollbackDetected
from sesemi.ks_state import FileStateWitness, StateWitness

H1, H2 = "11" * 32, "22" * 32


def test_lower_version_is_refused_naming_both(tmp_path):
    w = FileStateWitness(tmp_path / "ks_state.json")
    w.observe("ks", f"7.{H1}", "grant")
    again = FileStateWitness(tmp_path / "ks_state.json")  # another process, same $SESEMI_HOME
    with pytest.raises(RollbackDetected, match="state version 5, older than version 7"):
        again.observe("ks", f"5.{H2}", "audit")


def test_same_version_other_history_is_a_fork():
    w = StateWitness()
    w.observe("ks", f"7.{H1}", "a")
    with pytest.raises(RollbackDetected, match="another history"):
        w.observe("ks", f"7.{H2}", "b")


def test_an_answer_overtaken_by_a_concurrent_one_is_accepted():
    w = StateWitness()
    w.observe("ks", f"5.{H1}", "a")
    floor = w.highest("ks")              # request B sent now
    w.observe("ks", f"9.{H2}", "c")      # request C, sent later, answered first
    assert w.observe("ks", f"6.{H1}", "b", floor) == 6
    assert w.highest("ks")[0] == 9
    with pytest.raises(RollbackDetected):
        w.observe("ks", f"4.{H1}", "b", floor)   # older than what was seen when B was sent


def test_missing_or_malformed_state_is_refused(tmp_path):
    with pytest.raises(IntegrityError):
        StateWitness().observe("ks", None, "a")
    (tmp_path / "ks_state.json").write_text("{")
    with pytest.raises(FormatError, match="damaged"):
        FileStateWitness(tmp_path / "ks_state.json").observe("ks", f"1.{H1}", "a")
