"""Signed checkpoints of the key service's log, in the C2SP `tlog-checkpoint`
text format inside a C2SP `signed-note` (so existing witnesses and tooling can
read them):

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    — <key name> <base64(key id ‖ Ed25519 signature)>\\n

The note's text (through its last newline, not the blank line) is what the
signature covers; the key id is SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public
key)[:4], 0x01 naming Ed25519. The key service signs with its identity key,
which its attestation binds; the origin and the key name are derived from
that key (`origin_for`), so a client that pinned the key knows which origin
to expect. A note is never a length-prefixed `lp(...)` string, which starts
with a zero byte (a control character no note may hold), so a checkpoint
signature can never be mistaken for a response signature by the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import FormatError, IntegrityError
from .identity import verify_signature

_DASH = "\u2014 "
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # every control character but the newline
MAX_NOTE_BYTES = 4096
_SIG_ED25519 = b"\x01"


def origin_for(signing_public: bytes) -> str:
    """The log's origin line, and its key name: one per key-service identity."""
    return "sesemi-keyservice/" + hashlib.sha256(b"sesemi/ks-log-origin\n" + signing_public).hexdigest()[:32]


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _SIG_ED25519 + public).digest()[:4]


def describe(size: int, root: bytes) -> str:
    """How errors name a tree head."""
    return f"size {size}, root {root.hex()[:16]}…"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    def short(self) -> str:
        """How errors name a checkpoint."""
        return describe(self.size, self.root)


def sign(cp: Checkpoint, signer: Ed25519PrivateKey, public: bytes) -> str:
    """The signed note (text). `signer`: an Ed25519 private key (`.sign(bytes)`)."""
    body = cp.body()
    sig = signer.sign(body)
    return (body + b"\n" + f"{_DASH}{cp.origin} ".encode()
            + base64.b64encode(key_id(cp.origin, public) + sig) + b"\n").decode()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"checkpoint: {what} is not base64") from None


def parse(note: str) -> tuple[Checkpoint, list[tuple[str, bytes]]]:
    """(checkpoint, [(key name, key id ‖ signature)]) of a signed note; unverified."""
    if not isinstance(note, str):
        raise FormatError("checkpoint: not a signed note of at most 4 KiB")
    try:  # a str from JSON may hold lone surrogates, which are not UTF-8
        size = len(note.encode())
    except UnicodeEncodeError:
        raise FormatError("checkpoint: a signed note must be valid UTF-8") from None
    if size > MAX_NOTE_BYTES:
        raise FormatError("checkpoint: not a signed note of at most 4 KiB")
    if _CONTROL.search(note):
        raise FormatError("checkpoint: control characters in a signed note")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise FormatError("checkpoint: no signature block")
    text, sigs = note[:cut + 1], note[cut + 2:]
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise FormatError("checkpoint: needs origin, tree size and root hash lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    # isascii: str.isdigit() also holds for digits int() refuses ("²") or reads ("١")
    digits = size_s.isascii() and size_s.isdigit()
    if not origin or not digits or len(size_s) > 19 or (size_s != "0" and size_s[0] == "0"):
        raise FormatError("checkpoint: malformed origin or tree size")
    root = _b64(root_s, "root hash")
    if len(root) != 32:
        raise FormatError("checkpoint: the root hash is not 32 bytes")
    out = []
    for line in sigs.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise FormatError("checkpoint: malformed signature line")
        name, _, sig_s = line[len(_DASH):].rpartition(" ")
        raw = _b64(sig_s, "signature")
        # signed-note: key names are non-empty, with no Unicode spaces and no "+"
        if not name or "+" in name or any(ch.isspace() for ch in name) or len(raw) < 5:
            raise FormatError("checkpoint: malformed signature line")
        out.append((name, raw))
    if not out:
        raise FormatError("checkpoint: no signature")
    cp = Checkpoint(origin, int(size_s), root)
    if cp.body() != text.encode():
        raise FormatError("checkpoint: extension lines are not accepted")
    return cp, out


def open_(note: str, public: bytes, origin: str | None = None) -> Checkpoint:
    """The checkpoint of a note signed by `public` under the key name `origin`
    (by default the origin derived from `public`); IntegrityError otherwise."""
    cp, sigs = parse(note)
    want = origin or origin_for(public)
    if cp.origin != want:
        raise IntegrityError(f"checkpoint is for log {cp.origin!r}, not {want!r}")
    kid = key_id(want, public)
    # signed-note: every line of the known key (name and key ID) is verified, and
    # one that fails rejects the note, whichever order the lines come in; lines of
    # other keys (witnesses' cosignatures, a rotated key) are ignored.
    ours = dict.fromkeys(raw for name, raw in sigs if name == want and raw[:4] == kid)  # a repeat costs nothing
    if not ours:
        raise IntegrityError("checkpoint is not signed by the pinned key service")
    for raw in ours:
        try:
            verify_signature(public, raw[4:], cp.body())
        except (IntegrityError, FormatError):
            raise IntegrityError("checkpoint signature does not verify") from None
    return cp
