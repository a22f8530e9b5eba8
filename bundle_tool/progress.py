"""Progress on a terminal, nothing when piped: a bytes bar (sealing, pack
building) and numbered steps (the demo). Drawn on stderr, so stdout stays the
command's data (text or --json) either way."""

from __future__ import annotations

import os
import sys
from typing import IO

WIDTH = 30


def on_terminal(stream: IO[str]) -> bool:
    """A terminal that can redraw a line (TERM=dumb cannot)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # unreachable


class Bar:
    """`with Bar("sealing", total) as bar: ... bar(n)` for each n bytes done."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, unit: str = "B") -> None:
        """`unit` "B" shows sizes (KB, MB ...); any other is printed after plain counts."""
        self.label, self.total, self.done, self.unit = label, max(0, total), 0, unit
        self.stream = stream or sys.stderr
        self.enabled = on_terminal(self.stream)
        self._shown = -1

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        pct = 100 if self.total == 0 else min(100, self.done * 100 // self.total)
        if pct == self._shown:
            return
        self._shown = pct
        fill = WIDTH * pct // 100
        count = (f"{_size(self.done)} / {_size(self.total)}" if self.unit == "B"
                 else f"{self.done} / {self.total}{' ' + self.unit if self.unit else ''}")
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (WIDTH - fill)}] {pct:3d}% {count}")
        self.stream.flush()

    def __enter__(self) -> "Bar":
        self(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._shown >= 0:
            self.stream.write("\n" if exc[0] is None else "\r\033[K")
            self.stream.flush()


class Steps:
    """Numbered steps `[k/N]` on a terminal; the plain step line when piped."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total, self.n = total, 0
        self.stream = stream or sys.stdout
        self.enabled = on_terminal(self.stream)

    def __call__(self, msg: str) -> None:
        self.n += 1
        counter = f"[{self.n}/{self.total}] " if self.enabled else ""
        print(f"==> {counter}{msg}", file=self.stream, flush=True)
