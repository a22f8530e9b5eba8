"""The `sesemi` command line, run as a user would: every step a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundle_tool.procs import start_action, start_keyservice

from ..conftest import DIGITS, HELDOUT, plaintext_outputs


def sesemi(home: Path | None, *args: str, ok: bool = True, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess:
    """The real command line as a subprocess; `home` as $SESEMI_HOME (None: pass --home yourself)."""
    base = {k: v for k, v in os.environ.items() if k != "SESEMI_HOME"}
    p = subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                       env={**base, **({"SESEMI_HOME": str(home)} if home else {}), **(env or {})}, timeout=120)
    if ok:
        assert p.returncode == 0, f"sesemi {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def sesemi_json(home: Path | None, *args: str) -> Any:
    p = sesemi(home, *args, "--json")
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    ks = start_keyservice(work)
    servers = [ks]
    yield work, ks, servers
    for s in reversed(servers):
        s.stop()


def test_cli_full_flow(cli_world):
    """The owner's home is $SESEMI_HOME; the user's is --home, given after the
    command; data-printing commands are read through --json."""
    work, ks, servers = cli_world
    owner_home, user_home = work / "owner", work / "user"
    uh = ("--home", str(user_home))
    p = sesemi(owner_home, "ks", "attest", ks.url, "--insecure-sim")
    assert "INSECURE SIMULATION" in p.stderr and "mrenclave" in p.stdout
    pin = sesemi_json(None, "ks", "attest", ks.url, "--insecure-sim", *uh)
    assert pin["tee"] == "sim" and pin["insecure_simulation"] is True and len(pin["signing_public_key"]) == 64
    assert pin["pin_file"] == str(user_home / "ks_pin.json")
    sesemi(owner_home, "identity", "new", "alice")
    user_id = sesemi(None, "identity", "new", "bob", *uh).stdout.strip()
    assert user_id.startswith("p") and len(user_id) == 41
    sesemi(owner_home, "ks", "register", "--as", "alice")
    sesemi(None, "ks", "register", "--as", "bob", *uh)
    sealed, pack = work / "digits.sealed", work / "models.pack"
    sesemi(owner_home, "model", "seal", str(DIGITS), "--model-id", "digits", "--out", str(sealed))
    assert DIGITS.read_bytes()[1000:1064] not in sealed.read_bytes()
    sesemi(owner_home, "pack", "build", "--out", str(pack), str(sealed))
    measured = sesemi_json(owner_home, "action", "measure", "--pack", str(pack), "--ks-key", "pinned")
    mr = measured["mrenclave"]
    assert len(mr) == 64 and measured["trusted_config"]["ks_key"] == pin["signing_public_key"]
    sesemi(owner_home, "model", "publish", "digits", "--as", "alice", "--allow-mrenclave", mr)
    assert "granted no, request key none" in sesemi(None, "user", "status", "digits", "--as", "bob", *uh).stdout
    sesemi(owner_home, "grant", "digits", user_id, "--as", "alice")
    assert "granted yes, request key none" in sesemi(None, "user", "status", "digits", "--as", "bob", *uh).stdout
    sesemi(None, "user", "enroll", "digits", "--as", "bob", *uh)
    assert "granted yes, request key enrolled" in sesemi(None, "user", "status", "digits", "--as", "bob",
                                                         *uh).stdout

    # --ks-key pinned: the action pins the key service from the pin in --home
    action = start_action(work, pack=pack, ks_url=ks.url, extra=["--ks-key", "pinned", "--home", str(owner_home)])
    servers.append(action)
    x = np.load(HELDOUT)["x"][:5].astype(np.float32)
    np.save(work / "x.npy", x)
    meta = sesemi_json(None, "infer", "digits", "--action", action.url, "--as", "bob", *uh,
                       "--input", str(work / "x.npy"), "--out", str(work / "y.npz"))
    assert meta["insecure_simulation"] is True and meta["tee"] == "sim" and meta["out"] == str(work / "y.npz")
    with np.load(work / "y.npz") as y:
        ref = plaintext_outputs(x)
        assert set(y.files) == set(ref) == set(meta["outputs"])
        for k in ref:
            np.testing.assert_array_equal(y[k], ref[k])
            assert meta["outputs"][k] == {"shape": list(ref[k].shape), "dtype": str(ref[k].dtype)}

    # revoke, then a fresh action (empty key cache) refuses the user at once
    sesemi(owner_home, "revoke", "digits", user_id, "--as", "alice")
    fresh = start_action(work, pack=pack, ks_url=ks.url, name="action2",
                         extra=["--ks-key", pin["signing_public_key"]])
    servers.append(fresh)
    p = sesemi(None, "infer", "digits", "--action", fresh.url, "--as", "bob", *uh,
               "--input", str(work / "x.npy"), "--out", str(work / "y2.npz"), ok=False)
    # The action says only "not authorised ... or no request key"; the user asks the key service.
    assert p.returncode != 0 and "not authorised" in p.stderr and "Traceback" not in p.stderr
    assert not (work / "y2.npz").exists()
    assert "granted no, request key enrolled" in sesemi(None, "user", "status", "digits", "--as", "bob", *uh).stdout

    audit = sesemi(owner_home, "ks", "audit", "--as", "alice", "--model-id", "digits").stdout
    assert "event=release outcome=ok" in audit and "event=revoke" in audit
    release = next(line for line in audit.splitlines() if "event=release outcome=ok" in line)
    # ts (ISO, UTC), the enclave's mrenclave and its tee, as docs/deploy.md promises
    assert re.search(r"\bts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b", release), release
    assert f"mrenclave={mr}" in release and "tee=sim" in release
    entries = sesemi_json(owner_home, "ks", "audit", "--as", "alice", "--model-id", "digits")["entries"]
    assert {"ts", "mrenclave", "tee"} <= set(next(e for e in entries if e["event"] == "release"))
    # Refused by the fresh action's roster (bob is off it): no key was released after the revoke.
    revoked_at = max(i for i, e in enumerate(entries) if e["event"] == "revoke")  # entries: oldest first
    assert not any(e["event"] == "release" and e["outcome"] == "ok" and e.get("user_id") == user_id
                   for e in entries[revoked_at + 1:])


@pytest.mark.parametrize("args,needle", [
    (("identity", "show", "nobody"), "no identity"),
    (("identity", "new", "bad/name"), "identity names"),
    (("model", "seal", "/nonexistent.tflite", "--model-id", "m", "--out", "{tmp}/x.sealed"), "No such file"),
    (("model", "seal", str(DIGITS), "--model-id", "bad id!", "--out", "{tmp}/x.sealed"), "model id"),
    (("pack", "build", "--out", "{tmp}/x.pack", str(DIGITS)), "not a sealed"),
    (("action", "measure", "--pack", str(DIGITS)), "not a SeSeMI model pack"),
    (("ks", "register", "--as", "x"), "no key service pinned"),
    (("ks", "attest", "http://127.0.0.1:9"), "cannot reach"),
    # no urllib3 FutureWarning about a guessed scheme first: refused as not a URL
    (("ks", "attest", "not-a-url"), "is not an http(s) URL"),
    (("action", "measure", "--pack", str(DIGITS), "--ks-key", "nothex"), "32-byte signing key in hex"),
    (("action", "serve", "--ks-key", "nothex", "--pack", "p", "--ks", "http://127.0.0.1:9"),
     "32-byte signing key in hex"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, needle):
    p = sesemi(tmp_path / "home", *(a.replace("{tmp}", str(tmp_path)) for a in args), ok=False)
    check_one_line(p.returncode, p.stderr, needle)
    assert not list(tmp_path.glob("x.*")), "a failed command left a file behind (OUT.tmp?)"


def check_one_line(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert needle in err, err
    assert "Traceback" not in err and "Warning" not in err
    assert len(err.strip().splitlines()) == 1, err


# More of the same through main() in this process (a subprocess each would cost a Python start).
@pytest.mark.parametrize("args,needle", [
    (("ks", "attest", "http://[::1"), "is not an http(s) URL"),
    (("infer", "m", "--action", "127.0.0.1:8080", "--as", "u", "--input", "x.npy", "--out", "y.npz"),
     "is not an http(s) URL"),
    (("action", "measure", "--pack", str(DIGITS), "--ks-key", "ab" * 33), "32-byte signing key in hex"),
    (("action", "measure", "--pack", str(DIGITS), "--key-ttl", "0"), "--key-ttl must be in"),
    (("action", "measure", "--pack", str(DIGITS), "--ks-key", "pinned"), "no key service pinned"),
    (("action", "serve", "--ks-key", "pinned", "--pack", "p", "--ks", "http://127.0.0.1:9"),
     "no key service pinned"),
])
def test_cli_bad_input_in_process(tmp_path, args, needle):
    import contextlib
    import io

    from bundle_tool.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--home", str(tmp_path / "home"), *args])
    check_one_line(code, err.getvalue(), needle)


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
