"""Secret hygiene: find the bytes of models, inputs, outputs and keys, raw,
base64 or hex, in files the platform can read (logs, databases, WAL files,
temporary files). Suites `remember` the secrets they used and `watch` the
directories their servers wrote; the last test of the package scans them."""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path

SECRETS: dict[str, bytes] = {}
WATCHED: list[Path] = []
STARTED = time.time()
# The owner's and the user's own client state may hold their keys (invariant 1).
CLIENT_DIRS = {"home"}
WINDOW = 32


def remember(name: str, data: bytes) -> None:
    SECRETS[name] = bytes(data)


def watch(path: Path) -> None:
    WATCHED.append(Path(path))


def _windows(data: bytes, n: int = 16) -> list[bytes]:
    """Distinctive slices of a long secret (runs of one byte would match anything)."""
    if len(data) <= WINDOW:
        return [data]
    step = max(1, (len(data) - WINDOW) // n)
    return [data[o:o + WINDOW] for o in range(0, len(data) - WINDOW + 1, step) if len(set(data[o:o + WINDOW])) > 8]


def forms(data: bytes) -> list[tuple[str, bytes]]:
    """How a secret could appear in a file: raw, hex (either case), and base64
    (standard and URL-safe) at each of the three alignments it may have inside
    a longer encoded blob."""
    out = []
    for w in _windows(data):
        out += [("raw", w), ("hex", w.hex().encode()), ("HEX", w.hex().upper().encode())]
        for a in range(3):
            part = w[a:]
            part = part[:len(part) - len(part) % 3]
            if len(part) >= 12:
                out.append((f"base64@{a}", base64.b64encode(part)))
                out.append((f"base64url@{a}", base64.urlsafe_b64encode(part)))
    return out


def files() -> list[Path]:
    seen: set[Path] = set()
    out = []
    roots = list(WATCHED)
    # Temporary files the servers may have written outside the watched
    # directories: the session's own TMPDIR (tests/conftest.py private_tmpdir).
    tmp = Path(tempfile.gettempdir())
    for p in tmp.iterdir():
        if p.name.startswith(("pytest-of-", "sesemi-cli-prop-")):
            continue
        try:
            if p.stat().st_mtime >= STARTED:
                roots.append(p)
        except OSError:
            pass
    for root in roots:
        for p in ([root] if root.is_file() else root.rglob("*")):
            try:
                if not p.is_file() or p in seen or p.stat().st_size > 256 << 20:
                    continue
            except OSError:
                continue
            if CLIENT_DIRS & set(p.parts):
                continue
            seen.add(p)
            out.append(p)
    return out


def scan(secrets: dict[str, bytes] | None = None) -> tuple[list[str], int]:
    """(findings as 'file: secret (form)', number of files scanned)."""
    needles = [(name, form, pat) for name, data in (secrets or SECRETS).items() for form, pat in forms(data)]
    findings = []
    fs = files()
    for p in fs:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        for name, form, pat in needles:
            if pat in data:
                findings.append(f"{p}: {name} ({form})")
                break
    return findings, len(fs)
