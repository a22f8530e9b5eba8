"""Every reference resolves: tracked files cite requirements by stating them or
by linking a section of docs/, never a tracker number or a file that does not
exist (see docs/development.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Spelled so that this file does not match itself.
PATTERN = re.compile(rb"[Ii]ssue [0-9]|DESIGN" rb"\.md")


def test_no_tracked_file_cites_an_issue_number_or_a_missing_design_file() -> None:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    offenders = []
    for rel in out.decode().split("\0"):
        path = ROOT / rel
        if not rel or path == Path(__file__).resolve() or not path.is_file():
            continue
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if PATTERN.search(line):
                offenders.append(f"{rel}:{n}: {line.decode(errors='replace').strip()[:120]}")
    assert not offenders, "\n".join(offenders)
