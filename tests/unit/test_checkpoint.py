"""Signed checkpoints (sesemi/checkpoint.py): the C2SP tlog-checkpoint body in a
C2SP signed note, checked against the published Ed25519 note vectors of the
Go project's sumdb/note package (github.com/golang/mod) and the C2SP
specifications' examples, then
refusals: wrong key or origin, edited size or root, extra lines, control
characters, oversized notes, missing signatures; other signers' lines are
ignored as the signed-note specification requires."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesemi import checkpoint
from sesemi.checkpoint import Checkpoint
from sesemi.errors import FormatError, IntegrityError
from sesemi.identity import Identity, verify_signature

PROPS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DASH = "\u2014 "

# --- published vectors --------------------------------------------------------------------
# github.com/golang/mod, sumdb/note/note_test.go at commit
# fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db (TestSign, TestOpen): data only.
# Copyright 2009 The Go Authors, BSD-3-Clause (tests/fixtures/checkpoint/LICENSE.golang-mod).
# Keys are "name+keyhash+base64(0x01 ‖ key)": 0x01 names Ed25519, the private
# part is the RFC 8032 seed.
GO_PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_PETER_SIG = DASH + "PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
GO_ENOCH_SIG = DASH + "EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

# github.com/C2SP/C2SP at commit 5ba5ee830903e91240fc6f9f3a7a9293d49e69c9:
# signed-note.md, "Verifier keys / Example", and tlog-checkpoint.md's example
# checkpoint (whose key is not published). Specification text, CC BY 4.0, C2SP contributors.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = ("This is an example message.\n\n" + DASH + "example.com/foo "
             "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
C2SP_CHECKPOINT = ("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
                   + DASH + "example.com/behind-the-sofa "
                   "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")


def _vkey(vkey: str) -> tuple[str, bytes, bytes]:
    """(name, key ID, Ed25519 public key) of a verifier key."""
    name, kid, key = vkey.split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 1 and len(raw) == 33
    return name, bytes.fromhex(kid), raw[1:]


def test_key_id_reproduces_the_published_key_ids() -> None:
    for vkey in (GO_PETER_VKEY, GO_ENOCH_VKEY, C2SP_VKEY):
        name, kid, public = _vkey(vkey)
        assert checkpoint.key_id(name, public) == kid, name


def test_published_signature_lines_verify() -> None:
    for vkey, text, line in [(GO_PETER_VKEY, GO_TEXT, GO_PETER_SIG), (GO_ENOCH_VKEY, GO_TEXT, GO_ENOCH_SIG),
                             (C2SP_VKEY, C2SP_NOTE.split("\n\n")[0] + "\n", C2SP_NOTE.split("\n\n")[1])]:
        name, kid, public = _vkey(vkey)
        got_name, b64 = line.removeprefix(DASH).rstrip("\n").split(" ")
        raw = base64.b64decode(b64)
        assert got_name == name and raw[:4] == kid
        verify_signature(public, raw[4:], text.encode())


class _NoteText:
    """A note whose text is not a checkpoint: `sign` reads only `origin` (the key
    name) and `body()` (the text), so the Go vector's text can go through it."""

    origin = "PeterNeumann"

    def body(self) -> bytes:
        return GO_TEXT.encode()


def test_sign_reproduces_the_go_note_byte_for_byte() -> None:
    """Ed25519 is deterministic: the published private key gives the published note."""
    seed = base64.b64decode(GO_PETER_SKEY.split("+", 4)[-1])
    assert seed[0] == 1
    key = Ed25519PrivateKey.from_private_bytes(seed[1:])
    public = _vkey(GO_PETER_VKEY)[2]
    assert checkpoint.sign(_NoteText(), key, public) == GO_TEXT + "\n" + GO_PETER_SIG  # type: ignore[arg-type]


def test_the_c2sp_example_checkpoint_parses() -> None:
    cp, sigs = checkpoint.parse(C2SP_CHECKPOINT)
    assert cp == Checkpoint("example.com/behind-the-sofa", 20852163,
                            base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert [(name, len(raw)) for name, raw in sigs] == [("example.com/behind-the-sofa", 4 + 64)]
    assert cp.body().decode() + "\n" + DASH in C2SP_CHECKPOINT
    # Its key is not ours: any key we pin refuses it.
    with pytest.raises(IntegrityError):
        checkpoint.open_(C2SP_CHECKPOINT, KS.public_raw, origin="example.com/behind-the-sofa")


# --- our notes -------------------------------------------------------------------------------
def _identity(seed: int) -> Identity:
    return Identity("ks", Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test key %d" % seed).digest()))


KS, OTHER = _identity(1), _identity(2)
ORIGIN = checkpoint.origin_for(KS.public_raw)
ROOT = hashlib.sha256(b"a root").digest()
CP = Checkpoint(ORIGIN, 1234, ROOT)
NOTE = checkpoint.sign(CP, KS.private_key, KS.public_raw)


def _line(name: str, kid: bytes, sig: bytes) -> str:
    return f"{DASH}{name} {base64.b64encode(kid + sig).decode()}\n"


def test_a_note_is_the_c2sp_format() -> None:
    body = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    sig = KS.private_key.sign(body.encode())
    assert NOTE == body + "\n" + _line(ORIGIN, checkpoint.key_id(ORIGIN, KS.public_raw), sig)
    assert checkpoint.origin_for(KS.public_raw) != checkpoint.origin_for(OTHER.public_raw)
    assert " " not in ORIGIN and "+" not in ORIGIN  # a valid signed-note key name


@PROPS
@given(st.integers(0, 10**19 - 1), st.binary(min_size=32, max_size=32))
def test_sign_then_open_round_trips(size: int, root: bytes) -> None:
    cp = Checkpoint(ORIGIN, size, root)
    note = checkpoint.sign(cp, KS.private_key, KS.public_raw)
    assert checkpoint.open_(note, KS.public_raw) == cp
    assert checkpoint.parse(note)[0] == cp


def test_an_explicit_origin() -> None:
    cp = Checkpoint("example.com/log", 7, ROOT)
    note = checkpoint.sign(cp, KS.private_key, KS.public_raw)
    assert checkpoint.open_(note, KS.public_raw, origin="example.com/log") == cp
    with pytest.raises(IntegrityError, match="not 'sesemi-keyservice/"):
        checkpoint.open_(note, KS.public_raw)


def test_wrong_key_is_refused() -> None:
    with pytest.raises(IntegrityError, match="not signed by the pinned key"):
        checkpoint.open_(NOTE, OTHER.public_raw, origin=ORIGIN)
    # Another key signing under our origin and name: its key ID is not ours, so the line is not ours.
    forged = checkpoint.sign(CP, OTHER.private_key, OTHER.public_raw)
    with pytest.raises(IntegrityError, match="not signed by the pinned key"):
        checkpoint.open_(forged, KS.public_raw)
    # Another key's signature under our name and key ID: verified, and refused.
    body = CP.body().decode()
    claimed = body + "\n" + _line(ORIGIN, checkpoint.key_id(ORIGIN, KS.public_raw), OTHER.sign(CP.body()))
    with pytest.raises(IntegrityError, match="does not verify"):
        checkpoint.open_(claimed, KS.public_raw)


def test_wrong_origin_is_refused() -> None:
    other = checkpoint.sign(Checkpoint(checkpoint.origin_for(OTHER.public_raw), 1234, ROOT),
                            KS.private_key, KS.public_raw)
    with pytest.raises(IntegrityError, match="is for log"):
        checkpoint.open_(other, KS.public_raw)


def test_edited_size_or_root_is_refused() -> None:
    b64 = base64.b64encode(ROOT).decode()
    other_root = base64.b64encode(hashlib.sha256(b"another root").digest()).decode()
    for edited in [NOTE.replace("\n1234\n", "\n1235\n"), NOTE.replace("\n1234\n", "\n123\n"),
                   NOTE.replace("\n1234\n", "\n99999\n"), NOTE.replace(b64, other_root)]:
        assert edited != NOTE
        with pytest.raises(IntegrityError, match="does not verify"):
            checkpoint.open_(edited, KS.public_raw)


def test_malformed_size_and_root_lines_are_refused() -> None:
    b64 = base64.b64encode(ROOT).decode()
    # A base64 root whose unused low bits are set decodes to the same 32 bytes:
    # refused too, so one checkpoint has one text.
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(b64[-2])
    loose = b64[:-2] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last ^ 1] + "="
    assert base64.b64decode(loose) == ROOT
    for size in ["01234", "+1234", " 1234", "1234 ", "1_234", "0x4d2", "-1", "", "12345678901234567890",
                 "\u00b2", "\u0661\u0662", "\uff11\uff12"]:
        with pytest.raises(FormatError):
            checkpoint.parse(NOTE.replace("\n1234\n", f"\n{size}\n"))
    for root in ["", b64[:-4], b64 + "AAAA", "not base64!", b64.rstrip("="), loose,
                 base64.b64encode(ROOT + b"\x00").decode()]:
        with pytest.raises(FormatError):
            checkpoint.parse(NOTE.replace(b64, root))


def test_extra_lines_are_refused() -> None:
    body, sigs = NOTE.split("\n\n")
    for bad in [body + "\nextension\n\n" + sigs,          # an extension line (we sign none)
                NOTE + "Unexpected line.\n",               # Go's note_test "Unexpected line."
                NOTE + "\n",                               # a trailing blank line: no signature block
                body + "\n\n\n" + sigs,                    # an empty line in the text
                "\n" + NOTE,
                NOTE.rstrip("\n"),                         # no final newline
                body + "\n" + sigs]:                       # no blank line before the signatures
        with pytest.raises(FormatError):
            checkpoint.parse(bad)
    with pytest.raises(FormatError):
        checkpoint.parse("\n".join(NOTE.split("\n")[:2]) + "\n\n" + sigs)  # only two lines


@pytest.mark.parametrize("ch", ["\x00", "\x01", "\t", "\r", "\x1b", "\x1f"])
def test_control_characters_are_refused(ch: str) -> None:
    body, sigs = NOTE.split("\n\n")
    for bad in [ch + NOTE, body.replace("\n", ch + "\n", 1) + "\n" + sigs, NOTE.replace("\n", ch + "\n"),
                NOTE.replace(DASH, DASH + ch), NOTE[:-1] + ch + "\n"]:
        with pytest.raises(FormatError):
            checkpoint.parse(bad)


def test_notes_that_are_not_text_are_refused() -> None:
    for bad in [NOTE.encode(), None, 1234, NOTE.replace(ORIGIN, ORIGIN + "\ud800")]:  # a lone surrogate (from JSON)
        with pytest.raises(FormatError):
            checkpoint.parse(bad)  # type: ignore[arg-type]


def test_oversized_notes_are_refused() -> None:
    cosig = _line("witness.example/w", b"\x00\x00\x00\x01", bytes(72))
    big = NOTE + cosig * ((checkpoint.MAX_NOTE_BYTES - len(NOTE.encode())) // len(cosig.encode()) + 1)
    assert len(big.encode()) > checkpoint.MAX_NOTE_BYTES
    with pytest.raises(FormatError, match="4 KiB"):
        checkpoint.parse(big)
    with pytest.raises(FormatError, match="4 KiB"):
        checkpoint.parse("x" * (10 * checkpoint.MAX_NOTE_BYTES))


def test_sixteen_other_signatures_are_accepted() -> None:
    """signed-note: verifiers MUST accept at least 16 signatures (here: ours and
    16 witnesses' tlog-cosignature lines, 8-byte timestamp + 64-byte signature)."""
    lines = "".join(_line(f"witness-{i:02d}.example.org/sesemi-keyservice-witness", b"\x04\x00\x00%c" % i,
                          bytes(72)) for i in range(16))
    note = NOTE + lines
    assert len(note.encode()) <= checkpoint.MAX_NOTE_BYTES
    assert checkpoint.open_(note, KS.public_raw) == CP
    assert len(checkpoint.parse(note)[1]) == 17


def test_missing_signature_is_refused() -> None:
    body = NOTE.split("\n\n")[0] + "\n"
    for bad in [body, body + "\n", body + "\n" + DASH + "\n", body + "\n" + DASH + ORIGIN + "\n",
                body + "\n" + DASH + ORIGIN + " \n", body + "\n" + DASH + " AAAAAAAA\n",
                body + "\n" + DASH + ORIGIN + " AAAA\n",                       # shorter than a key ID
                body + "\n" + "- " + NOTE.split(DASH)[1]]:                     # a hyphen, not an em dash
        with pytest.raises(FormatError):
            checkpoint.parse(bad)


def test_key_names_with_spaces_or_plus_are_malformed() -> None:
    """signed-note: key names MUST NOT contain Unicode spaces or "+" (Go's note_test "Bad Name")."""
    sig = NOTE.split(" ")[-1]
    for name in ["Bad Name", "bad+name", "bad\u00a0name", "bad\u2003name"]:
        with pytest.raises(FormatError):
            checkpoint.parse(NOTE + f"{DASH}{name} {sig}")


def test_other_signers_lines_are_ignored() -> None:
    """signed-note: verifiers MUST ignore signatures from unknown keys, even if they
    share a name or a key ID (but not both) with a known key."""
    kid = checkpoint.key_id(ORIGIN, KS.public_raw)
    junk = bytes(64)
    for extra in [_line("witness.example/w", b"\x01\x02\x03\x04", junk),      # another signer
                  _line(ORIGIN, b"\x01\x02\x03\x04", junk),                   # our name, another key ID
                  _line("witness.example/w", kid, junk),                      # our key ID, another name
                  _line(ORIGIN, checkpoint.key_id(ORIGIN, OTHER.public_raw), OTHER.sign(CP.body())),
                  GO_PETER_SIG]:
        assert checkpoint.open_(NOTE + extra, KS.public_raw) == CP
        body, ours = NOTE.split("\n\n")
        assert checkpoint.open_(body + "\n\n" + extra + ours, KS.public_raw) == CP


def test_a_repeated_line_of_ours_is_accepted() -> None:
    ours = NOTE.split("\n\n")[1]
    assert checkpoint.open_(NOTE + ours + ours, KS.public_raw) == CP


def test_a_failing_line_of_ours_rejects_the_note_in_any_order() -> None:
    """signed-note: if a signature from a known key fails to verify, the whole note is rejected."""
    body, ours = NOTE.split("\n\n")
    bad = _line(ORIGIN, checkpoint.key_id(ORIGIN, KS.public_raw), KS.sign(b"something else"))
    for note in [NOTE + bad, body + "\n\n" + bad + ours]:
        with pytest.raises(IntegrityError, match="does not verify"):
            checkpoint.open_(note, KS.public_raw)


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10**6),
                          st.characters(codec="utf-8")), min_size=1, max_size=3))
def test_a_mutated_note_is_refused_or_says_the_same(ops: list) -> None:
    """Whatever a host does to a note in transit, open_ raises FormatError or
    IntegrityError, or returns the very checkpoint that was signed (a change
    confined to the signature line's encoding)."""
    note = list(NOTE)
    for kind, pos, ch in ops:
        pos %= len(note) + 1
        if kind == "flip" and pos < len(note):
            note[pos] = chr(ord(note[pos]) ^ 1)
        elif kind == "cut":
            note = note[:pos]
        elif kind == "insert":
            note.insert(pos, ch)
        elif kind == "delete" and pos < len(note):
            del note[pos]
    try:
        got = checkpoint.open_("".join(note), KS.public_raw)
    except (FormatError, IntegrityError):
        return
    assert got == CP
