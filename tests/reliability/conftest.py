from __future__ import annotations

import pytest

from ..conftest import DIGITS, make_world
from . import hygiene
from .figures import FIGURES, NOTES


@pytest.fixture(scope="package")
def w(tmp_path_factory):
    """One deployment (key service, digits published, one action) shared by the
    property, tampering and hygiene suites; outages and crashes make their own."""
    world = make_world(tmp_path_factory.mktemp("reliability"))
    hygiene.watch(world.work)
    hygiene.remember("digits model", DIGITS.read_bytes())
    hygiene.remember("model key", world.model_key)
    hygiene.remember("request key", world.request_key)
    try:
        world.act = world.action()
        yield world
    finally:
        world.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if FIGURES or NOTES:
        terminalreporter.section("reliability figures")
        for k in sorted(FIGURES):
            terminalreporter.write_line(f"{k}: {FIGURES[k]}")
        for k in sorted(NOTES):
            terminalreporter.write_line(f"{k}: {NOTES[k]}")
