"""What the ciphertext of a response envelope holds (envelope v3).

The platform carries an action's answer and may alter anything outside the
AEAD. So the answer's labels (`tee`, `insecure_simulation`) and, for a
request that authenticated, the reason it was refused travel inside the
ciphertext; the plain copies beside it are for operators and are checked
against these by the SDK. The platform learns only an HTTP status.

Layout: u32 big-endian length of a JSON header, the header, then the body.
Header keys: `tee` (str), `insecure_simulation` (bool), and `error`
({kind, status, message}) for a refusal, whose body is empty; otherwise the
body is the encoded output tensors (sesemi/tensors.py). A missing label reads
as simulated: nothing unauthenticated can claim hardware.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .encoding import JSONDecodeError, json_dumps, json_loads
from .errors import FormatError

_HEADER_KEYS = frozenset({"tee", "insecure_simulation", "error"})
_MAX_HEADER = 4096


@dataclass(frozen=True)
class Answer:
    tee: str
    insecure_simulation: bool
    body: bytes = b""
    error: dict[str, Any] | None = None


def encode(tee: str, insecure_simulation: bool, body: bytes = b"", error: dict[str, Any] | None = None) -> bytes:
    header: dict[str, Any] = {"tee": tee, "insecure_simulation": insecure_simulation}
    if error is not None:
        header["error"] = error
    raw = json_dumps(header)
    return struct.pack(">I", len(raw)) + raw + body


def decode(plain: bytes) -> Answer:
    """Only called on plaintext that authenticated; still parsed strictly."""
    if len(plain) < 4:
        raise FormatError("answer: shorter than its header length")
    (n,) = struct.unpack(">I", plain[:4])
    if n > _MAX_HEADER or 4 + n > len(plain):
        raise FormatError("answer: header length out of range")
    try:
        header = json_loads(plain[4:4 + n])
    except JSONDecodeError:
        raise FormatError("answer: header is not JSON") from None
    if not isinstance(header, dict) or set(header) - _HEADER_KEYS:
        raise FormatError("answer: header must be an object of tee, insecure_simulation, error")
    tee = header.get("tee", "?")
    simulated = header.get("insecure_simulation", True)
    if not isinstance(tee, str) or type(simulated) is not bool:
        raise FormatError("answer: labels have the wrong type")
    error = header.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("kind"), str)
                                  and isinstance(error.get("message"), str)
                                  and type(error.get("status")) is int):
        raise FormatError("answer: malformed error")
    body = plain[4 + n:]
    if error is not None and body:
        raise FormatError("answer: a refusal carries no outputs")
    return Answer(tee, simulated, body, error)
