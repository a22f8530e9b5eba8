"""Invariant 1: no model, input or output plaintext (and no key) outside the
enclave or the owner's/user's own client: not in the key service's database,
not in any log, not in any file the run wrote."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from sesemi.client import ActionClient
from sesemi.errors import FormatError

from ..conftest import DIGITS, make_world


def _windows(data: bytes, n: int = 24, size: int = 48) -> list[bytes]:
    """Distinctive slices of `data` (skip runs of equal bytes, which match anything)."""
    out = []
    step = max(1, (len(data) - size) // n)
    for off in range(0, len(data) - size, step):
        w = data[off:off + size]
        if len(set(w)) > 8:
            out.append(w)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("leak")
    w = make_world(work)
    try:
        action = w.action()
        rng = np.random.default_rng(7)
        x = rng.random((16, 8, 8, 1), dtype=np.float32)
        res = ActionClient(action.url).infer("digits", w.user.principal_id, w.request_key, {"image": x})
        # An error path too: a wrong-shaped input is refused without echoing it.
        bad = rng.random((2, 9, 8, 1), dtype=np.float32)
        with pytest.raises(FormatError):
            ActionClient(action.url).infer("digits", w.user.principal_id, w.request_key, {"image": bad})
        for s in reversed(w.servers):
            s.stop()
        out = next(iter(res.outputs.values()))
        yield w, np.concatenate([x.ravel(), bad.ravel()]), out
    finally:
        for s in w.servers:
            s.stop()


def _platform_files(work: Path) -> list[Path]:
    # home/ is the owner's and the user's own client state: allowed to hold their keys.
    return [p for p in work.rglob("*") if p.is_file() and "home" not in p.relative_to(work).parts]


def test_scanned_files_exist(run):
    w, _, _ = run
    names = {p.name for p in _platform_files(w.work)}
    assert "ks.db" in names and "keyservice.log" in names and "action.log" in names
    assert "main.pack" in names


def test_no_model_plaintext_anywhere(run):
    w, _, _ = run
    windows = _windows(DIGITS.read_bytes())
    assert len(windows) > 10
    for p in _platform_files(w.work):
        data = p.read_bytes()
        for win in windows:
            assert win not in data, f"model plaintext found in {p}"


def test_no_input_or_output_plaintext_anywhere(run):
    w, x, out = run
    needles = _windows(x.tobytes(), n=16, size=32) + _windows(out.astype(np.float32).tobytes(), n=8, size=16)
    needles += [base64.b64encode(x.tobytes()[:96])[:64]]
    for p in _platform_files(w.work):
        data = p.read_bytes()
        for n in needles:
            assert n not in data, f"input/output plaintext found in {p}"


def test_no_key_material_in_keyservice_storage_or_logs(run):
    w, _, _ = run
    keys = [w.model_key, w.request_key]
    needles = keys + [base64.b64encode(k) for k in keys] + [k.hex().encode() for k in keys]
    for p in _platform_files(w.work):
        if p.suffix in (".pack", ".sealed"):
            continue
        data = p.read_bytes()
        for n in needles:
            assert n not in data, f"key material found in {p}"


def test_audit_log_has_entries_and_no_keys(run):
    w, _, _ = run
    import sqlite3

    con = sqlite3.connect(w.work / "ks" / "ks.db")
    rows = con.execute("SELECT * FROM audit").fetchall()
    events = {r[2] for r in rows}
    assert {"register", "put_model", "grant", "put_request_key", "attest", "release"} <= events
    blob = repr(rows).encode()
    for k in (w.model_key, w.request_key):
        assert base64.b64encode(k) not in blob and k.hex().encode() not in blob
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit SET outcome='ok'")
