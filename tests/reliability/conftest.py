from __future__ import annotations

from .figures import FIGURES, NOTES


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    if FIGURES or NOTES:
        terminalreporter.section("reliability figures")
        for k in sorted(FIGURES):
            terminalreporter.write_line(f"{k}: {FIGURES[k]}")
        for k in sorted(NOTES):
            terminalreporter.write_line(f"{k}: {NOTES[k]}")
