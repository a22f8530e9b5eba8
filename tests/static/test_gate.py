"""The lint, type and import gate, run by `make test` (and so by CI's .ci/run).

- ruff: the rule set in pyproject.toml ([tool.ruff.lint]); a `noqa` that
  suppresses nothing is itself an error (RUF100).
- `ruff format` is not enforced: docs/development.md says why.
- mypy: strict on sesemi/, complete signatures in the components
  ([tool.mypy] in pyproject.toml).
- import-linter: app, keyservice, bundle_tool and router use sesemi and never
  each other, except the CLI starting each server through its one entry (.importlinter).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPONENTS = ["sesemi", "app", "keyservice", "bundle_tool", "router"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: `make install` installs the test extra (pyproject.toml)")
    return str(path)


def test_ruff_check() -> None:
    p = _run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "."])
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy() -> None:
    p = _run([_tool("mypy"), "--no-incremental", "--cache-dir", "/dev/null", *COMPONENTS])
    assert p.returncode == 0, p.stdout + p.stderr


def test_import_contracts() -> None:
    p = _run([_tool("lint-imports"), "--no-cache"])
    assert p.returncode == 0, p.stdout + p.stderr
