"""The sizing rule and render.py: Occlum.json for a real sealed pack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sesemi
from occlum_instance import checks, render, sizing
from sesemi import sealed_model
from sesemi.pack import build as build_pack

from ..conftest import DIGITS, mrenclave_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_pack(tmp_path_factory):
    """models/digits/digits.tflite sealed into a pack, as an owner would (no key service needed)."""
    d = tmp_path_factory.mktemp("pack")
    sealed_model.seal_file(DIGITS, d / "digits.sealed", sealed_model.new_model_key(), "digits")
    build_pack(d / "main.pack", [d / "digits.sealed"])
    return d / "main.pack"


@pytest.mark.parametrize("appliance", ["action", "keyservice"])
@pytest.mark.parametrize("kind", ["prod", "dev"])
def test_rendered_configs_pass_every_check(demo_pack, appliance, kind):
    sizes = render.pack_model_sizes(demo_pack) if appliance == "action" else []
    config, need = render.render(appliance, kind, sizes, sizing.Settings())
    assert checks.check_rendered(config, appliance, kind, need, f"{appliance}.{kind}") == []
    assert config["metadata"]["product_id"] == sesemi.ISV_PROD_ID
    assert config["metadata"]["version_number"] == sesemi.ISV_SVN
    assert f"SESEMI_VERSION={sesemi.__version__}" in config["env"]["default"]
    assert config["metadata"]["debuggable"] is (kind == "dev")


def test_demo_pack_sizes_come_from_the_manifest(demo_pack):
    assert render.pack_model_sizes(demo_pack) == [DIGITS.stat().st_size]


def test_bigger_pack_and_more_concurrency_raise_the_limits(demo_pack):
    small, n_small = render.render("action", "prod", [DIGITS.stat().st_size], sizing.Settings())
    big, n_big = render.render("action", "prod", [300 << 20, 100 << 20], sizing.Settings(memory_budget_mb=2048))
    busy, n_busy = render.render("action", "prod", [DIGITS.stat().st_size], sizing.Settings(concurrency=32))
    size = lambda c: sizing.parse_size(c["resource_limits"]["user_space_size"])  # noqa: E731
    assert size(big) > size(small) and n_big.terms["models"] > 400 * 1.0
    assert size(busy) > size(small)
    assert busy["resource_limits"]["max_num_of_threads"] > small["resource_limits"]["max_num_of_threads"]
    assert "SESEMI_THREADS=36" in busy["env"]["default"]
    for config, need in ((small, n_small), (big, n_big), (busy, n_busy)):
        assert checks.check_memory(config, need, "x") == []
    # the platform's memory value covers the enclave
    assert n_big.openwhisk_memory_mb >= size(big) >> 20


def test_rendering_never_lowers_the_template():
    template = json.loads((REPO / "occlum_instance/templates/action.prod.json").read_text())
    tiny, _ = render.render("action", "prod", [1000], sizing.Settings(concurrency=1, pool_size=1))
    assert tiny["resource_limits"]["user_space_size"] == template["resource_limits"]["user_space_size"]


def test_budget_bounds_the_models_held_at_once():
    s = sizing.Settings(memory_budget_mb=100, pool_size=1)
    mb = 1 << 20
    assert sizing.loaded_models([20 * mb] * 3, s) == [20 * mb] * 2  # the LRU charges 2 x 20 each: 3 > 100
    assert sizing.loaded_models([500 * mb], s) == [500 * mb]  # one model always loads, however large
    two = sizing.need("action", s, [20 * mb] * 2)
    many = sizing.need("action", s, [20 * mb] * 10)
    assert two.user_space_mib == many.user_space_mib  # the LRU caps what is resident


@pytest.mark.parametrize("text,value", [("256MB", 256 << 20), ("1GB", 1 << 30), ("32KB", 32 << 10),
                                        ("10 MB", 10 << 20), ("4096B", 4096)])
def test_occlum_size_syntax(text, value):
    assert sizing.parse_size(text) == value


@pytest.mark.parametrize("text", ["256M", "MB", "1.5GB", "-1MB", 256])
def test_occlum_size_syntax_refused(text):
    with pytest.raises(ValueError):
        sizing.parse_size(text)


def test_sim_mrenclave_matches_the_cli_prediction(demo_pack):
    assert render.sim_mrenclave(demo_pack, 60) == mrenclave_for(demo_pack)


def test_render_cli(demo_pack, tmp_path):
    out = subprocess.run([sys.executable, "occlum_instance/render.py", "--appliance", "action", "--config", "prod",
                          "--pack", str(demo_pack), "--out", str(tmp_path / "Occlum.json"),
                          "--sizing-out", str(tmp_path / "sizing.json"), "--concurrency", "4",
                          "--ks-url", "https://ks.example:8443"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "Occlum.json").read_text())
    assert "SESEMI_KS_URL=https://ks.example:8443" in config["env"]["default"]
    doc = json.loads((tmp_path / "sizing.json").read_text())
    assert doc["settings"]["concurrency"] == 4 and doc["need"]["openwhisk_memory_mb"] > 0
    assert "OpenWhisk memory >=" in out.stderr


def test_render_refuses_a_plaintext_model(tmp_path):
    out = subprocess.run([sys.executable, "occlum_instance/render.py", "--appliance", "action", "--config", "prod",
                          "--pack", str(DIGITS), "--out", str(tmp_path / "Occlum.json")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2 and "not a sealed SeSeMI model pack" in out.stderr
    assert not (tmp_path / "Occlum.json").exists()


def test_build_script_refuses_bad_input(tmp_path):
    """build.sh stops before any Occlum tool runs: no mode, plaintext pack, HW without a key."""
    sh = REPO / "occlum_instance" / "build.sh"
    r = subprocess.run(["bash", str(sh), "--pack", str(DIGITS)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--mode SIM or --mode HW is required" in r.stderr
    r = subprocess.run(["bash", "-n", str(sh)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
