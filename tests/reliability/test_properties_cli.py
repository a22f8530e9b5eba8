"""Property tests of the CLI's file inputs: the pin, identity,
model-key and request-key files, the input tensors, the model to seal and
the sealed models to pack. Each damaged file gives one line on stderr and a
non-zero exit (or, if still valid, success), never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bundle_tool.cli import main
from bundle_tool.home import Home
from sesemi import sealed_model
from sesemi.client import KsPin
from sesemi.envelope import new_request_key

from .figures import count, twin
from .test_properties_formats import SEALED, mutated

ROOT = Path(tempfile.mkdtemp(prefix="sesemi-cli-prop-"))
HOME = Home(ROOT / "home")
USER = HOME.new_identity("u")
HOME.save_pin(KsPin("http://127.0.0.1:9", "00" * 32, "sim", "ab" * 32, "cd" * 32, 1, True,
                    signing_public_key="00" * 32))
HOME.save_model_key("m", sealed_model.new_model_key(), sealed_model.new_seal_id())
HOME.save_request_key(USER.principal_id, "m", new_request_key())
X = ROOT / "x.npy"
np.save(X, np.zeros((1, 8, 8, 1), np.float32))
Z = ROOT / "x.npz"
np.savez(Z, image=np.zeros((1, 8, 8, 1), np.float32))
SEALED_FILE = ROOT / "m.sealed"
SEALED_FILE.write_bytes(SEALED)

INFER = ["infer", "m", "--action", "http://127.0.0.1:9", "--as", "u", "--input", str(X), "--out", str(ROOT / "y.npz")]
FILES = {
    # file -> (path, command that reads it)
    "pin": (HOME.pin_path, ["ks", "register", "--as", "u"]),
    "identity": (HOME.root / "identities" / "u.pem", ["identity", "show", "u"]),
    "model_key": (HOME.root / "model_keys" / "m.json",
                  ["model", "publish", "m", "--as", "u", "--allow-mrenclave", "ab" * 32]),
    "request_key": (HOME.root / "request_keys" / USER.principal_id / "m.key", INFER),
    "npy": (X, INFER),
    "npz": (Z, INFER[:-4] + ["--input", str(Z), "--out", str(ROOT / "y.npz")]),
    "model": (ROOT / "model.tflite", ["model", "seal", str(ROOT / "model.tflite"), "--model-id", "m2",
                                      "--out", str(ROOT / "m2.sealed")]),
    "sealed": (SEALED_FILE, ["pack", "build", "--out", str(ROOT / "p.pack"), str(SEALED_FILE)]),
}
(ROOT / "model.tflite").write_bytes(os.urandom(64))
ORIGINAL = {k: p.read_bytes() for k, (p, _) in FILES.items()}


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    import shutil

    shutil.rmtree(ROOT, ignore_errors=True)


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--home", str(HOME.root), "--connect-timeout", "1", "--read-timeout", "1", *argv])
    return code, err.getvalue()


def _check(kind: str, blob: bytes) -> None:
    path, argv = FILES[kind]
    path.write_bytes(blob)
    count("property cases: CLI file inputs")
    try:
        code, err = run_cli(argv)
    finally:
        path.write_bytes(ORIGINAL[kind])
    lines = [line for line in err.splitlines() if not line.startswith("WARNING: INSECURE SIMULATION")]
    if code != 0:
        assert len(lines) == 1 and lines[0].startswith("sesemi: error: "), err
    assert not list(ROOT.glob("*.tmp")), "a failed command left a temporary file behind"


# Every kind of damaged CLI input file is one error line and a non-zero exit.
_KINDS = sorted(FILES)


@pytest.mark.parametrize("kind", _KINDS)
def test_cli_file_inputs(kind):
    @twin(mutated(ORIGINAL[kind]), fast=12, soak=300)
    def prop(blob):
        _check(kind, blob)

    prop[0]()


@pytest.mark.soak
@pytest.mark.parametrize("kind", _KINDS)
def test_cli_file_inputs_soak(kind):
    @twin(mutated(ORIGINAL[kind]), fast=12, soak=300)
    def prop(blob):
        _check(kind, blob)

    prop[1]()

