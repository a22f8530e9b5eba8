"""Clients as witnesses of the key service's log (sesemi/ks_state.py): an answer
is accepted only with a consistency proof from the checkpoint held, so a
restored, padded or forked log is refused whatever its size."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sesemi import checkpoint, ks_log, merkle
from sesemi.errors import FormatError, IntegrityError, RollbackDetected
from sesemi.ks_state import FileStateWitness, Held, LogAnswer, StateWitness

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
SERVICE = PUB.hex()


class Log:
    """A tree the test grows, as a key service would, with its checkpoints."""

    def __init__(self, leaves=()):
        self.frontier = merkle.Frontier()
        self.nodes = {}
        for leaf in leaves:
            self.add(leaf)

    def add(self, data: bytes) -> "Log":
        for lv, ix, h in self.frontier.append(merkle.leaf_hash(data)):
            self.nodes[(lv, ix)] = h
        return self

    def fork(self, size: int) -> "Log":
        """A copy of the first `size` leaves (the host's restored database)."""
        other = Log()
        other.frontier = merkle.Frontier()
        for i in range(size):
            other.add_hash(self.nodes[(0, i)])
        return other

    def add_hash(self, h: bytes) -> None:
        for lv, ix, hh in self.frontier.append(h):
            self.nodes[(lv, ix)] = hh

    def note(self) -> str:
        cp = checkpoint.Checkpoint(checkpoint.origin_for(PUB), self.frontier.size, self.frontier.root())
        return checkpoint.sign(cp, KEY, PUB)

    def proof(self, first: int, second: int) -> list[bytes]:
        return merkle.consistency_proof(first, second, lambda lv, ix: self.nodes[(lv, ix)])

    def answer(self, sent: Held | None) -> LogAnswer:
        if sent is None or not 0 < sent.size <= self.frontier.size:
            return LogAnswer(self.note(), "", "")
        return LogAnswer(self.note(), str(sent.size), ks_log.encode_proof(self.proof(sent.size, self.frontier.size)))


def grow(log: Log, n: int, tag: bytes) -> Log:
    for i in range(n):
        log.add(tag + str(i).encode())
    return log


def test_a_log_that_extends_what_was_held_is_accepted_and_persisted(tmp_path):
    log = grow(Log(), 5, b"a")
    w = FileStateWitness(tmp_path / "ks_state.json")
    w.observe(SERVICE, PUB, log.answer(None), None, "a")
    grow(log, 7, b"b")
    sent = w.held(SERVICE)
    w.observe(SERVICE, PUB, log.answer(sent), sent, "b")
    again = FileStateWitness(tmp_path / "ks_state.json")  # another process, same $SESEMI_HOME
    assert again.held(SERVICE).size == 12


def test_a_restored_log_padded_past_the_held_size_is_refused_naming_both(tmp_path):
    """The attack: copy the database, revoke (the client sees it), restore the
    copy, pad it with entries past every witness's size."""
    log = grow(Log(), 17, b"a")
    copy = log.fork(17)
    log.add(b"revoke")                                   # size 18, seen by the owner
    w = FileStateWitness(tmp_path / "ks_state.json")
    w.observe(SERVICE, PUB, log.answer(None), None, "revoke")
    grow(copy, 6, b"junk join")                          # the restored copy, padded to 23
    sent = w.held(SERVICE)
    with pytest.raises(RollbackDetected, match=r"size 23.*does not extend.*size 18"):
        w.observe(SERVICE, PUB, copy.answer(sent), sent, "get model")
    # A forged proof from another history does not help either.
    forged = LogAnswer(copy.note(), "18", ks_log.encode_proof(log.proof(17, 18)))
    with pytest.raises(RollbackDetected, match="does not extend"):
        w.observe(SERVICE, PUB, forged, sent, "get model")
    assert w.held(SERVICE).size == 18


def test_forks_of_equal_and_smaller_size_are_refused():
    log = grow(Log(), 10, b"a")
    w = StateWitness()
    w.observe(SERVICE, PUB, log.answer(None), None, "a")
    sent = w.held(SERVICE)
    equal = grow(log.fork(9), 1, b"other")
    with pytest.raises(RollbackDetected, match="same size, another root"):
        w.observe(SERVICE, PUB, equal.answer(sent), sent, "b")
    smaller = log.fork(8)
    with pytest.raises(RollbackDetected, match="older than the checkpoint"):
        w.observe(SERVICE, PUB, smaller.answer(sent), sent, "c")


def test_an_answer_without_its_proof_is_refused():
    log = grow(Log(), 4, b"a")
    w = StateWitness()
    w.observe(SERVICE, PUB, log.answer(None), None, "a")
    grow(log, 3, b"b")
    with pytest.raises(RollbackDetected, match="no consistency proof from size 4"):
        w.observe(SERVICE, PUB, LogAnswer(log.note(), "", ""), w.held(SERVICE), "b")


def test_an_answer_overtaken_by_a_concurrent_one_is_related_by_a_fetched_proof():
    log = grow(Log(), 5, b"a")
    w = StateWitness()
    w.observe(SERVICE, PUB, log.answer(None), None, "a")
    sent_b = w.held(SERVICE)                       # request B sent at size 5
    answer_b = grow(log, 1, b"b").answer(sent_b)   # answered at 6
    answer_c = grow(log, 3, b"c").answer(sent_b)   # C, sent at 5 too, answered at 9, arrives first
    w.observe(SERVICE, PUB, answer_c, sent_b, "c")
    fetched = []

    def fetch(lo, hi):
        fetched.append((lo, hi))
        return log.proof(lo, hi)

    assert w.observe(SERVICE, PUB, answer_b, sent_b, "b", fetch).size == 6
    assert fetched == [(6, 9)] and w.held(SERVICE).size == 9
    # B from a fork of the same base: the fetched proof cannot relate it.
    other = grow(log.fork(5), 1, b"fork")
    with pytest.raises(RollbackDetected, match="does not extend"):
        w.observe(SERVICE, PUB, other.answer(sent_b), sent_b, "b", fetch)


def test_bad_signatures_and_damaged_files_are_refused(tmp_path):
    log = grow(Log(), 3, b"a")
    other = Ed25519PrivateKey.generate()
    cp = checkpoint.Checkpoint(checkpoint.origin_for(PUB), 3, log.frontier.root())
    forged = checkpoint.sign(cp, other, PUB)
    with pytest.raises(IntegrityError):
        StateWitness().observe(SERVICE, PUB, LogAnswer(forged, "", ""), None, "a")
    with pytest.raises(FormatError):
        StateWitness().observe(SERVICE, PUB, LogAnswer("", "", ""), None, "a")
    (tmp_path / "ks_state.json").write_text("{")
    with pytest.raises(FormatError, match="damaged"):
        FileStateWitness(tmp_path / "ks_state.json").held(SERVICE)


def test_a_record_from_before_checkpoints_starts_over(tmp_path):
    (tmp_path / "ks_state.json").write_text('{"%s": {"seq": 41, "head": "%s"}}' % (SERVICE, "11" * 32))
    w = FileStateWitness(tmp_path / "ks_state.json")
    assert w.held(SERVICE) is None
    w.observe(SERVICE, PUB, grow(Log(), 2, b"a").answer(None), None, "a")
    assert w.held(SERVICE).size == 2


def test_a_vouched_note_still_names_this_key_services_log():
    """The transport verified the response signature over the note, so the
    witness need not verify the note's own signature again; its origin must
    still be this key service's, and a file keeps only notes that verify."""
    log = grow(Log(), 3, b"a")
    w = StateWitness()
    w.observe(SERVICE, PUB, log.answer(None), None, "a", vouched=True)
    other = checkpoint.sign(checkpoint.Checkpoint("another-log/x", 3, log.frontier.root()), KEY, PUB)
    with pytest.raises(IntegrityError, match="not this key service's"):
        StateWitness().observe(SERVICE, PUB, LogAnswer(other, "", ""), None, "a", vouched=True)
