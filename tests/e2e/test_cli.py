"""The `sesemi` command line, run as a user would: every step a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_tool.procs import start_action, start_keyservice

from ..conftest import DIGITS, HELDOUT, plaintext_outputs


def sesemi(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                       env={**os.environ, "SESEMI_HOME": str(home)}, timeout=120)
    if ok:
        assert p.returncode == 0, f"sesemi {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    ks = start_keyservice(work)
    servers = [ks]
    yield work, ks, servers
    for s in reversed(servers):
        s.stop()


def test_cli_full_flow(cli_world):
    work, ks, servers = cli_world
    owner_home, user_home = work / "owner", work / "user"
    p = sesemi(owner_home, "ks", "attest", ks.url, "--insecure-sim")
    assert "INSECURE SIMULATION" in p.stderr and "mrenclave" in p.stdout
    sesemi(user_home, "ks", "attest", ks.url, "--insecure-sim")
    sesemi(owner_home, "identity", "new", "alice")
    user_id = sesemi(user_home, "identity", "new", "bob").stdout.strip()
    assert user_id.startswith("p") and len(user_id) == 41
    sesemi(owner_home, "ks", "register", "--as", "alice")
    sesemi(user_home, "ks", "register", "--as", "bob")
    sealed, pack = work / "digits.sealed", work / "models.pack"
    sesemi(owner_home, "model", "seal", str(DIGITS), "--model-id", "digits", "--out", str(sealed))
    assert DIGITS.read_bytes()[1000:1064] not in sealed.read_bytes()
    sesemi(owner_home, "pack", "build", "--out", str(pack), str(sealed))
    mr = sesemi(owner_home, "action", "measure", "--pack", str(pack)).stdout.strip()
    assert len(mr) == 64
    sesemi(owner_home, "model", "publish", "digits", "--as", "alice", "--allow-mrenclave", mr)
    sesemi(owner_home, "grant", "digits", user_id, "--as", "alice")
    sesemi(user_home, "user", "enroll", "digits", "--as", "bob")

    action = start_action(work, pack=pack, ks_url=ks.url)
    servers.append(action)
    x = np.load(HELDOUT)["x"][:5].astype(np.float32)
    np.save(work / "x.npy", x)
    p = sesemi(user_home, "infer", "digits", "--action", action.url, "--as", "bob",
               "--input", str(work / "x.npy"), "--out", str(work / "y.npz"))
    assert "INSECURE SIMULATION" in p.stderr
    with np.load(work / "y.npz") as y:
        ref = plaintext_outputs(x)
        assert set(y.files) == set(ref)
        for k in ref:
            np.testing.assert_array_equal(y[k], ref[k])

    # revoke, then a fresh action (empty key cache) refuses the user at once
    sesemi(owner_home, "revoke", "digits", user_id, "--as", "alice")
    fresh = start_action(work, pack=pack, ks_url=ks.url, name="action2")
    servers.append(fresh)
    p = sesemi(user_home, "infer", "digits", "--action", fresh.url, "--as", "bob",
               "--input", str(work / "x.npy"), "--out", str(work / "y2.npz"), ok=False)
    assert p.returncode != 0 and "not granted" in p.stderr and "Traceback" not in p.stderr
    assert not (work / "y2.npz").exists()

    audit = sesemi(owner_home, "ks", "audit", "--as", "alice", "--model-id", "digits").stdout
    assert "event=release outcome=ok" in audit and "event=revoke" in audit


@pytest.mark.parametrize("args,needle", [
    (("identity", "show", "nobody"), "no identity"),
    (("identity", "new", "bad/name"), "identity names"),
    (("model", "seal", "/nonexistent.tflite", "--model-id", "m", "--out", "/tmp/x.sealed"), "No such file"),
    (("model", "seal", str(DIGITS), "--model-id", "bad id!", "--out", "/tmp/x.sealed"), "model id"),
    (("pack", "build", "--out", "/tmp/x.pack", str(DIGITS)), "not a sealed"),
    (("action", "measure", "--pack", str(DIGITS)), "not a SeSeMI model pack"),
    (("ks", "register", "--as", "x"), "no key service pinned"),
    (("ks", "attest", "http://127.0.0.1:9"), "cannot reach"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, needle):
    p = sesemi(tmp_path / "home", *args, ok=False)
    assert p.returncode != 0
    assert needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_cli_refuses_sim_without_flag(cli_world, tmp_path):
    _, ks, _ = cli_world
    p = sesemi(tmp_path, "ks", "attest", ks.url, ok=False)
    assert p.returncode != 0 and "sim evidence refused" in p.stderr


def test_cli_publish_needs_an_allowlist(cli_world, tmp_path):
    _, ks, _ = cli_world
    sesemi(tmp_path, "ks", "attest", ks.url, "--insecure-sim")
    sesemi(tmp_path, "identity", "new", "o")
    sesemi(tmp_path, "ks", "register", "--as", "o")
    sesemi(tmp_path, "model", "seal", str(DIGITS), "--model-id", "m", "--out", str(tmp_path / "m.sealed"))
    p = sesemi(tmp_path, "model", "publish", "m", "--as", "o", ok=False)
    assert p.returncode != 0 and "at least one mrenclave or mrsigner" in p.stderr


def test_cli_help_lists_commands():
    p = subprocess.run([sys.executable, "-m", "bundle_tool", "--help"], capture_output=True, text=True)
    for cmd in ("identity", "ks", "model", "grant", "revoke", "user", "pack", "action", "keyservice", "infer",
                "demo"):
        assert cmd in p.stdout
