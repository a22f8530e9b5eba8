"""Secret hygiene, run last in this package (hence the name): every
log, database, WAL and temporary file the suites' servers wrote, scanned for
the models, inputs, outputs and keys they used, raw, base64 and hex. A planted
leak is found, so the scan can fail."""

from __future__ import annotations

import base64

import pytest

from . import hygiene
from .figures import count, note


def _scan(w) -> None:
    # The shared deployment is still running: its WAL file is there to be read.
    assert (w.work / "ks" / "ks.db-wal").exists() or (w.work / "ks" / "ks.db").exists()
    findings, n_files = hygiene.scan()
    count("hygiene: files scanned", n_files)
    count("hygiene: secrets looked for", len(hygiene.SECRETS))
    note("hygiene: findings", str(len(findings)))
    assert not findings, findings
    assert n_files >= 5 and len(hygiene.SECRETS) >= 3  # logs, databases, WAL: the scan saw files


def test_no_secret_in_any_file(w):
    _scan(w)


@pytest.mark.soak
def test_no_secret_in_any_file_soak(w):
    _scan(w)


@pytest.mark.parametrize("form", ["raw", "base64", "hex"])
def test_planted_leak_is_found(w, form):
    key = w.request_key
    leak = {"raw": key, "base64": base64.b64encode(b"xy" + key), "hex": key.hex().encode()}[form]
    planted = w.work / "logs" / "planted.log"
    planted.write_bytes(b"2026-01-01 action INFO something ... " + leak + b" ...\n")
    try:
        findings, _ = hygiene.scan({"request key": key})
    finally:
        planted.unlink()
    assert any("planted.log" in f for f in findings), findings
