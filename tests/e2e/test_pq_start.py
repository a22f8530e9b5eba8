"""Start-up of every process that seals or opens a box: without ML-KEM in the
crypto library it refuses with one line naming the primitive (never a
traceback at the first request); and the key service's downgrade flag is
loud, announced and measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import urllib3

from bundle_tool.procs import free_port, start_keyservice
from sesemi.encoding import b64d, json_loads

from ..conftest import REPO
from .test_cli import sesemi

# The OpenSSL behind `cryptography` made to report no ML-KEM, then the entry point.
_NO_MLKEM = ("from cryptography.hazmat.backends.openssl.backend import backend; "
             "backend.mlkem_supported = lambda: False; import runpy, sys; sys.argv[0] = {mod!r}; "
             "runpy.run_module({mod!r}, run_name='__main__', alter_sys=True)")


def _run_without_mlkem(mod: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_MLKEM.format(mod=mod), *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=60)


def _one_line(p: subprocess.CompletedProcess) -> None:
    assert p.returncode != 0, p.stdout
    assert "lacks ML-KEM-768" in p.stderr and "MLKEM768-X25519" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.parametrize("mod,args", [
    ("bundle_tool", ("keyservice", "serve", "--db", "{tmp}/ks.db", "--port", "{port}")),
    ("bundle_tool", ("action", "serve", "--port", "{port}")),
    ("bundle_tool", ("ks", "attest", "http://127.0.0.1:9", "--insecure-sim")),
    ("keyservice", ()),
    ("app", ()),
])
def test_missing_ml_kem_is_one_line_at_start(tmp_path, mod, args):
    argv = [a.format(tmp=tmp_path, port=free_port()) for a in args]
    env = {"SESEMI_HOME": str(tmp_path / "home"), "SESEMI_KS_DB": str(tmp_path / "ks.db"),
           "SESEMI_PORT": str(free_port()), "SESEMI_HOST": "127.0.0.1"}
    _one_line(_run_without_mlkem(mod, *argv, env=env))
    assert not (tmp_path / "ks.db").exists()  # refused before anything was created


def test_classical_kem_flag_is_loud_announced_and_measured(tmp_path):
    http = urllib3.PoolManager()
    plain = start_keyservice(tmp_path / "a")
    flagged = start_keyservice(tmp_path / "b", extra=["--insecure-allow-classical-kem"])
    try:
        att = {}
        for name, srv in (("plain", plain), ("flagged", flagged)):
            r = http.request("GET", srv.url + f"/v1/attestation?nonce={'ab' * 32}")
            att[name] = json_loads(r.data)
        assert att["flagged"]["insecure_allow_classical_kem"] is True
        assert att["plain"]["insecure_allow_classical_kem"] is False
        mr = {k: json_loads(b64d(v["evidence"]["body"]))["mrenclave"] for k, v in att.items()}
        assert mr["plain"] != mr["flagged"]  # part of the measured configuration
        log = flagged.log_path.read_text()
        assert "INSECURE: --insecure-allow-classical-kem is on" in log
        assert "insecure-allow-classical-kem" not in plain.log_path.read_text()
        warned = sesemi(tmp_path / "h1", "ks", "attest", flagged.url, "--insecure-sim")
        assert "--insecure-allow-classical-kem" in warned.stderr and "MLKEM768-X25519" in warned.stdout
        assert "classical" not in sesemi(tmp_path / "h2", "ks", "attest", plain.url, "--insecure-sim").stderr
    finally:
        plain.stop()
        flagged.stop()
