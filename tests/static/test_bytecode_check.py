"""The images ship checked-hash bytecode of the appliances' code
(occlum_instance/checks/bytecode.py): the check passes on the committed files,
fails on the files before this change (HEAD~ of the change: no compileall, the
code boms excluding __pycache__), and on copies broken on purpose."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from occlum_instance.checks import Layout, check_bytecode
from .editing import edit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def broken(tmp_path) -> Layout:
    for d in ("occlum_instance", "images"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    return Layout(tmp_path)


def test_the_committed_files_pass():
    assert check_bytecode(Layout()) == []


def test_no_compileall_in_build_sh(broken):
    edit(broken.occ / "build.sh", "--invalidation-mode checked-hash", "--invalidation-mode unchecked-hash")
    assert any("does not compile the code" in f for f in check_bytecode(broken))


def test_compiling_before_the_clean_ships_the_builders_pyc(broken):
    text = (broken.occ / "build.sh").read_text()
    line = next(ln for ln in text.splitlines() if "compileall" in ln)
    text = text.replace(line + "\n", "")
    text = text.replace("mkdir -p \"$SRC\"\n", "mkdir -p \"$SRC\"\n" + line.strip() + "\n", 1)
    (broken.occ / "build.sh").write_text(text)
    assert any("before removing the copied __pycache__" in f for f in check_bytecode(broken))


def test_a_code_bom_excluding_pycache(broken):
    (broken.occ / "bom" / "code-app.yaml").write_text(
        (broken.occ / "bom" / "code-app.yaml").read_text() + "excludes:\n  - __pycache__\n")
    assert any("excludes __pycache__ from /opt/sesemi/lib/app" in f for f in check_bytecode(broken))


def test_the_plain_image_without_compileall(broken):
    df = broken.images / "action.Dockerfile"
    text = df.read_text()
    line = next(ln for ln in text.splitlines() if "compileall" in ln)
    df.write_text(text.replace(line + "\n", ""))
    assert any("stage plain does not compile" in f for f in check_bytecode(broken))


def test_checked_hash_pyc_follow_an_edited_source(tmp_path):
    """What the choice rests on, with this Python: a checked-hash .pyc is not
    used once its .py changes (an unchecked-hash one would still run)."""
    pkg = tmp_path / "m"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("WHO = 'compiled'\n")
    for mode, expect in (("checked-hash", "edited"), ("unchecked-hash", "compiled")):
        (pkg / "__init__.py").write_text("WHO = 'compiled'\n")
        shutil.rmtree(pkg / "__pycache__", ignore_errors=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", mode, str(pkg)],
                       check=True, timeout=60)
        (pkg / "__init__.py").write_text("WHO = 'edited'\n")
        out = subprocess.run([sys.executable, "-B", "-c", "import m; print(m.WHO)"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == expect, (mode, out.stdout, out.stderr)
