"""The repository stands alone: a user's clone has nothing beside it, so no
tracked file may point outside the repository at the steering folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Spelled in two parts so that this file does not match itself.
FORBIDDEN = "../" + "shared"


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    offenders = []
    for path in tracked_files():
        try:
            if FORBIDDEN.encode() in path.read_bytes():
                offenders.append(str(path.relative_to(ROOT)))
        except (FileNotFoundError, IsADirectoryError):
            continue
    assert not offenders, f"tracked files refer to {FORBIDDEN}: {offenders}"


def test_dcap_fixture_is_in_the_repository_with_its_licence() -> None:
    d = ROOT / "tests" / "fixtures" / "dcap"
    for name in ("sgx_quote.bin", "sgx_quote_collateral.json", "LICENSE.dcap-qvl"):
        assert (d / name).is_file(), name
