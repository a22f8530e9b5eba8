"""The `sesemi-client` distribution installs the `sesemi` package and nothing
else at the top level (no `app`, `keyservice`, `bundle_tool`, `router`), and
asks for none of the servers' dependencies (docs/development.md, "Package layout")."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_client_wheel_holds_sesemi_alone(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "build_client_dist.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    wheel = Path(p.stdout.strip().splitlines()[-1])
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"sesemi"}
    assert "sesemi/client.py" in names and "sesemi/hpke_box.py" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [ln.split(":", 1)[1].strip().lower() for ln in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires
                             if r.startswith(("flask", "waitress", "gunicorn", "psycopg", "prometheus", "requests"))]
