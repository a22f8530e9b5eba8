"""The command line's file inputs: a model that is not TFLite is not sealed,
a failed seal leaves nothing behind, broken inputs and a damaged pin are one
line on stderr; progress on a terminal only; LiteRT's banner is gone but its
real errors are not."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import subprocess
import sys

import numpy as np
import pytest

from bundle_tool.cli import main
from bundle_tool.home import Home
from bundle_tool.progress import Bar, Steps
from sesemi import sealed_model
from sesemi.errors import FormatError

from ..conftest import DIGITS, REPO
from .test_cli import sesemi


def one_line_error(p: subprocess.CompletedProcess, needle: str) -> None:
    assert p.returncode != 0, p.stdout
    assert needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def in_process(home, *argv: str) -> subprocess.CompletedProcess:
    """The command line's main() in this process: the variants of a case whose
    first instance runs as a subprocess (each subprocess costs a Python start)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *argv])
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("make,needle,run", [
    (lambda d: (REPO / "README.md").read_bytes(), "not a TFLite model", "subprocess"),
    (lambda d: b"", "empty file", "in_process"),
    (lambda d: d[:4000], "does not load it", "in_process"),                   # truncated
    (lambda d: d[:8] + bytes(len(d) - 8), "does not load it", "in_process"),  # right identifier, garbage after
])
def test_seal_refuses_what_the_interpreter_does_not_load(tmp_path, make, needle, run):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(make(DIGITS.read_bytes()))
    argv = ("model", "seal", str(bad), "--model-id", "m", "--out", str(tmp_path / "bad.sealed"))
    p = sesemi(tmp_path / "home", *argv, ok=False) if run == "subprocess" else in_process(tmp_path / "home", *argv)
    one_line_error(p, needle)
    assert os.listdir(tmp_path) == ["bad.tflite"], "a refused seal wrote something"


def test_failed_seal_leaves_no_tmp_file(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()  # renaming OUT.tmp over a directory fails after sealing
    p = in_process(tmp_path / "home", "model", "seal", str(DIGITS), "--model-id", "m", "--out", str(out))
    one_line_error(p, "Is a directory")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    # the library too: a bad model id used to leave a 0-byte OUT.tmp
    with pytest.raises(FormatError):
        sealed_model.seal_file(DIGITS, tmp_path / "x.sealed", sealed_model.new_model_key(), "bad id!")
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def _truncated_npz(path):
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.float32))
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("name,make,run", [
    ("empty.npy", lambda p: p.write_bytes(b""), "subprocess"),
    ("trunc.npz", _truncated_npz, "subprocess"),
    ("garbage.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "in_process"),
    ("pickled.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "in_process"),
])
def test_infer_on_a_broken_input_is_one_line(tmp_path, name, make, run):
    src = tmp_path / name
    make(src)
    argv = ("infer", "m", "--action", "http://127.0.0.1:9", "--as", "u", "--input", str(src),
            "--out", str(tmp_path / "y.npz"))
    p = sesemi(tmp_path / "home", *argv, ok=False) if run == "subprocess" else in_process(tmp_path / "home", *argv)
    one_line_error(p, f"cannot read input {src}")


PIN_DAMAGE = [b"{not json", b"[1, 2]", b'{"url": "http://x"}', b"",
              b'{"url": "http://x", "hpke_public_key": "zz", "tee": "sim", "mrenclave": "", "mrsigner": "",'
              b' "isv_svn": 1, "insecure_simulation": true}']


@pytest.mark.parametrize("damage", PIN_DAMAGE)
def test_damaged_pin_is_a_clear_error(tmp_path, damage):
    home = Home(tmp_path)
    home.pin_path.write_bytes(damage)
    with pytest.raises(FormatError, match="is damaged"):
        home.pin()


def test_damaged_pin_from_the_command_line(tmp_path):
    (tmp_path / "ks_pin.json").write_bytes(b"{not json")
    Home(tmp_path).new_identity("a")
    one_line_error(sesemi(tmp_path, "ks", "register", "--as", "a", ok=False), "ks_pin.json is damaged")
    one_line_error(in_process(tmp_path, "action", "measure", "--pack", "p", "--ks-key", "pinned"),
                   "ks_pin.json is damaged")


def test_damaged_model_and_request_keys(tmp_path):
    home = Home(tmp_path)
    (tmp_path / "model_keys").mkdir()
    (tmp_path / "model_keys" / "m.json").write_bytes(b"{broken")
    with pytest.raises(FormatError, match="is damaged"):
        home.model_key("m")
    (tmp_path / "request_keys" / "p1").mkdir(parents=True)
    (tmp_path / "request_keys" / "p1" / "m.key").write_text("!!not base64!!")
    with pytest.raises(FormatError, match="is damaged"):
        home.request_key("p1", "m")


# -- progress -----------------------------------------------------------------------------------------

def _on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_seal_and_pack_show_a_bar_on_a_terminal_only(tmp_path):
    env = {**os.environ, "SESEMI_HOME": str(tmp_path / "home"), "TERM": "xterm"}
    cli = [sys.executable, "-m", "bundle_tool"]
    rc, shown = _on_pty([*cli, "model", "seal", str(DIGITS), "--model-id", "m", "--out",
                         str(tmp_path / "m.sealed")], env)
    assert rc == 0, shown
    assert "\rsealing m [" in shown and "100% 313.1 KB / 313.1 KB" in shown, shown
    rc, shown = _on_pty([*cli, "pack", "build", "--out", str(tmp_path / "p.pack"), str(tmp_path / "m.sealed")],
                        env)
    assert rc == 0 and "\rpacking 1 model(s) [" in shown and "100%" in shown, shown
    # not a terminal: the result line only
    p = in_process(tmp_path / "home2", "model", "seal", str(DIGITS), "--model-id", "m", "--out",
                   str(tmp_path / "m2.sealed"))
    assert p.returncode == 0 and p.stderr == "" and p.stdout.startswith("sealed m: ")


def test_bar_and_steps_follow_the_stream():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        os.environ.setdefault("TERM", "xterm")
        Steps(2, stream=tty)("first")
        with Bar("x", 10, stream=tty, unit="") as bar:
            bar(10)
    chunks = []
    while True:  # until the closed slave side reads as end (EIO)
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    shown = b"".join(chunks).decode()
    assert "==> [1/2] first" in shown and "100% 10 / 10" in shown
    piped = io.StringIO()
    Steps(2, stream=piped)("first")
    with Bar("x", 10, stream=piped) as bar:
        bar(10)
    assert piped.getvalue() == "==> first\n"


# -- LiteRT's banner ----------------------------------------------------------------------------------

def test_litert_banner_is_dropped_and_real_stderr_kept():
    code = ("import os, numpy as np\n"
            "from bundle_tool import litert\n"
            "from bundle_tool.reference import plaintext_outputs\n"
            f"with litert._without_banner():\n    os.write(2, b'a real error\\n')\n"
            f"plaintext_outputs({str(DIGITS)!r}, np.zeros((1, 8, 8, 1), np.float32))\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
    assert p.stderr == "a real error\n"
    # and without the filter, this LiteRT does print it (so the filter is not a no-op)
    raw = subprocess.run([sys.executable, "-c", "from ai_edge_litert.interpreter import Interpreter\n"
                          f"i = Interpreter(model_path={str(DIGITS)!r}); i.allocate_tensors()"],
                         capture_output=True, text=True, timeout=60)
    assert "XNNPACK delegate" in raw.stderr


def test_pin_with_an_unusable_hpke_key_is_one_line(tmp_path):
    """A pin whose HPKE key's X25519 half is a low-order point (all zeros) made publish a ValueError traceback."""
    from sesemi.client import KsPin

    home = Home(tmp_path)
    home.save_pin(KsPin("http://127.0.0.1:9", "00" * 1216, "sim", "ab" * 32, "cd" * 32, 1, True,
                        signing_public_key="00" * 32))
    home.new_identity("o")
    home.save_model_key("m", sealed_model.new_model_key(), sealed_model.new_seal_id())
    p = in_process(tmp_path, "model", "publish", "m", "--as", "o", "--allow-mrenclave", "ab" * 32)
    one_line_error(p, "not a usable MLKEM768-X25519 key")


def test_identity_with_a_mangled_key_type_is_one_line(tmp_path):
    """A PEM whose algorithm OID is damaged raised UnsupportedAlgorithm, a traceback."""
    home = Home(tmp_path)
    pem = tmp_path / "identities" / "a.pem"
    home.new_identity("a")
    blob = bytearray(pem.read_bytes())
    import base64
    body = b"".join(blob.splitlines()[1:-1])
    der = bytearray(base64.b64decode(body))
    der[9] ^= 0x01  # inside the Ed25519 OID 1.3.101.112
    pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(bytes(der)) + b"\n-----END PRIVATE KEY-----\n")
    one_line_error(in_process(tmp_path, "identity", "show", "a"), "is not a PEM private key")


def test_an_unexpected_error_is_still_one_line(tmp_path, monkeypatch):
    """A bug of ours (a command raising what it should not) is one line naming only the exception's
    type (its message could quote an input); SESEMI_DEBUG=1 gives the traceback."""
    from bundle_tool import commands

    def boom(args):
        raise KeyError("secret-ish detail")

    monkeypatch.setattr(commands, "cmd_identity_show", boom)
    monkeypatch.delenv("SESEMI_DEBUG", raising=False)
    p = in_process(tmp_path, "identity", "show", "a")
    assert p.returncode == 70
    assert p.stderr == "sesemi: error: internal error (KeyError); SESEMI_DEBUG=1 shows the traceback\n"
    monkeypatch.setenv("SESEMI_DEBUG", "1")
    with pytest.raises(KeyError):
        in_process(tmp_path, "identity", "show", "a")
