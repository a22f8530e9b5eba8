"""Edits the static-check tests make to a copy of the Occlum and image files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def edit_json(path: Path, fn: Callable[[Any], None]) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc, indent=4))
