"""Shared fixtures. End-to-end fixtures start the real servers as processes
(`python -m bundle_tool ...`) and talk HTTP over loopback."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bundle_tool.testing.world import LocalWorld, mrenclave_for  # noqa: F401  (re-exported for tests)
from bundle_tool.testing import reference
from bundle_tool.testing.processes import Server

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits" / "digits.tflite"
HELDOUT = REPO / "models" / "digits" / "digits_heldout.npz"


@dataclass
class World(LocalWorld):
    """The local world with the digits model published for `pack` and granted to `user`."""

    model_key: bytes = b""
    request_key: bytes = b""
    sealed: Path = Path()
    pack: Path = Path()

    def action(self, pack: Path | None = None, pinned: bool | None = None, **kw) -> Server:  # type: ignore[override]
        return super().action(pack or self.pack, pinned, **kw)

    def seal(self, model_id: str, src: Path = DIGITS) -> tuple[Path, bytes]:
        return super().seal(model_id, src)


def make_world(work: Path, insecure_sim: bool = True, pin_ks: bool = True, ks_args: tuple[str, ...] = ()) -> World:
    base = LocalWorld.start(work, insecure_sim=insecure_sim, ks_args=ks_args)
    w = World(**{**base.__dict__, "pin_ks": pin_ks})
    w.pack = w.deploy_pack("main", {"digits": DIGITS})
    w.sealed = work / "digits.sealed"
    w.model_key, w.request_key = w.model_keys["digits"], w.request_keys["digits"]
    w.home.save_model_key("digits", w.model_key, w.seal_ids["digits"])
    w.home.save_request_key(w.user.principal_id, "digits", w.request_key)
    return w


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory):
    """Every server the suite starts writes its temporary files here (TMPDIR is
    inherited), so the hygiene scan reads this session's files and not what
    other programs on the machine left in /tmp."""
    d = tmp_path_factory.mktemp("tmpdir")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(d)
    tempfile.tempdir = None
    yield d
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("world"))
    yield w
    w.stop()


@pytest.fixture(scope="module")
def action(world):
    return world.action()


@pytest.fixture(scope="session")
def heldout():
    d = np.load(HELDOUT)
    return d["x"].astype(np.float32), d["y"]


def plaintext_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    return reference.plaintext_outputs(DIGITS, x)


def pytest_itemcollected(item):
    """Under pytest-xdist (`--dist loadgroup`), a module's tests stay on one
    worker, so module-scoped deployments start once; the reliability package
    is one group, because its last test scans what the others' servers wrote.
    Marked as each item is collected: xdist reads the groups in its own
    pytest_collection_modifyitems (by rewriting node ids, which pytest 9 no
    longer honours: hence pytest<9 in the test extra)."""
    mod = getattr(item.module, "__name__", "") if hasattr(item, "module") else ""
    group = "reliability" if mod.startswith("tests.reliability.") else (mod or item.nodeid.split("::")[0])
    item.add_marker(pytest.mark.xdist_group(group))
