"""The README's session by hand is docs/examples/by-hand.sh, and CI runs it:
in a scratch directory with its own homes for alice and bob, on ephemeral
ports, within a time bound, its background servers killed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from bundle_tool.testing.processes import free_port

from ..conftest import HELDOUT, REPO, plaintext_outputs

SCRIPT = REPO / "docs" / "examples" / "by-hand.sh"
BOUND_S = 120


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks, pos = [], 0
    while (start := text.find("```sh\n", pos)) >= 0:
        end = text.index("```\n", start + 6)
        blocks.append(text[start + 6:end])
        pos = end + 4
    return blocks


def test_readme_shows_the_by_hand_script_as_it_is():
    script = SCRIPT.read_text()
    blocks = [b for b in readme_blocks() if "session by hand" in b]
    assert blocks, "README has no ```sh block holding docs/examples/by-hand.sh"
    assert blocks[0] == script, "README's by-hand block differs from docs/examples/by-hand.sh: copy the script in"


def test_readme_starts_with_make_demo_and_make_test():
    first = readme_blocks()[0].splitlines()
    assert [line.split()[:2] for line in first[:2]] == [["make", "demo"], ["make", "test"]]


def test_by_hand_script_runs_as_written(tmp_path):
    work = tmp_path / "work"
    before = sorted(p.name for p in REPO.iterdir())
    env = {**os.environ, "WORK": str(work), "KS_PORT": str(free_port()), "ACTION_PORT": str(free_port()),
           # `. .venv/bin/activate`, as the README says: sesemi and the venv's python on PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SESEMI_HOME", None)
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        out, err = "", f"by-hand.sh did not finish within {BOUND_S} s"
    finally:
        # the script's trap stops its servers; make sure of it, whatever happened
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"by-hand.sh failed:\n{out}\n{err}"
    assert "Traceback" not in err and "INFO: Created TensorFlow Lite" not in err
    # bob's answers are the plaintext model's on the same 8 digits
    x = np.load(HELDOUT)["x"][:8]
    np.testing.assert_array_equal(np.load(work / "x.npy"), x)
    with np.load(work / "y.npz") as y:
        for name, ref in plaintext_outputs(x).items():
            np.testing.assert_array_equal(y[name], ref)
    assert "predicted:" in out and "event=release outcome=ok" in out
    # alice's and bob's state in their own homes under $WORK; nothing in the repository
    assert (work / "alice" / "ks_pin.json").exists() and (work / "bob" / "identities" / "bob.pem").exists()
    assert sorted(p.name for p in REPO.iterdir()) == before
