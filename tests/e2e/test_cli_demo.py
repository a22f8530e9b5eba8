"""`make demo`'s command on a terminal (numbered steps, a bar, no LiteRT
banner) and piped (plain steps); and `make install`'s pip line prints nothing.
Each takes longer than `make test` can afford: `make soak` runs them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO
from .test_cli_inputs import _on_pty

pytestmark = pytest.mark.soak


def test_demo_on_a_terminal_and_piped():
    cli = [sys.executable, "-m", "bundle_tool", "demo"]
    rc, shown = _on_pty(cli, {**os.environ, "TERM": "xterm"})
    assert rc == 0, shown
    for k in range(1, 6):
        assert f"==> [{k}/5] " in shown, shown
    assert "digits sent [" in shown and "100% 360 / 360" in shown
    assert "INFO: Created TensorFlow Lite" not in shown and "Traceback" not in shown
    assert "predictions identical: True" in shown
    p = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "==> starting the key service" in p.stdout and "[1/5]" not in p.stdout
    assert "digits sent" not in p.stdout + p.stderr and "INFO: Created TensorFlow Lite" not in p.stderr


def test_make_install_pip_line_is_silent(tmp_path):
    """The Makefile's editable install, as it is written (with --no-deps: they are installed)."""
    recipe = (REPO / "Makefile").read_text()
    line = next(ln.strip() for ln in recipe.splitlines() if re.search(r"pip install .*-e '\.\[test\]'", ln))
    argv = shlex.split(line.replace("$(BIN)", str(Path(sys.executable).parent)))
    p = subprocess.run([*argv, "--no-deps"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout + p.stderr == "", p.stdout + p.stderr
