"""Build the `sesemi-client` wheel: the `sesemi` package alone (the SDK that
owners and users import, and what the enclaves' code stands on), with only the
dependencies it imports. The repository's own distribution (`pip install .`)
also installs the components `app`, `keyservice`, `bundle_tool` and `router`
as top-level packages, for operators running the servers; a generic name such
as `app` would collide in a user's environment, so users install this one
instead (docs/development.md, "Package layout").

    .venv/bin/python tools/build_client_dist.py OUT_DIR

Offline: it builds with the environment's setuptools (no build isolation)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What sesemi/ imports outside the standard library (gunicorn only in
# sesemi/gunicorn_serve.py, which the router and the emulator use, not clients).
CLIENT_DEPENDENCIES = {"cryptography", "numpy", "urllib3", "orjson", "pybase64", "dcap-qvl"}

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "sesemi-client"
version = "{version}"
description = "SeSeMI's SDK alone: the sesemi package, without the servers' top-level packages"
requires-python = "{python}"
license = {{text = "Apache-2.0"}}
dependencies = {dependencies}

[tool.setuptools]
packages = {{find = {{include = ["sesemi*"]}}}}
"""


def client_pyproject() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] in CLIENT_DEPENDENCIES]
    missing = CLIENT_DEPENDENCIES - {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in deps}
    if missing:
        raise SystemExit(f"build_client_dist: pyproject.toml no longer lists {sorted(missing)}")
    return PYPROJECT.format(version=project["version"], python=project["requires-python"],
                            dependencies="[" + ", ".join(f'"{d}"' for d in deps) + "]")


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sesemi-client"
        shutil.copytree(REPO / "sesemi", src / "sesemi", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (src / "pyproject.toml").write_text(client_pyproject())
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(out_dir), str(src)], capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise SystemExit(f"build_client_dist: pip wheel failed:\n{p.stdout}{p.stderr}")
    (wheel,) = sorted(out_dir.glob("sesemi_client-*.whl"))
    return wheel


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: build_client_dist.py OUT_DIR")
    print(build(Path(sys.argv[1])))
