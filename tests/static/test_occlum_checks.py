"""Static checks of the Occlum appliances and their images (occlum_instance/checks.py).

Each check runs on the committed files (must pass) and on copies broken on
purpose in tmp_path (must report the break): a check that cannot fail proves
nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from occlum_instance import checks, sizing
from occlum_instance.checks import Layout
from occlum_instance.checks.dockerfile import split_entry
from occlum_instance.closure import runtime_closure
from .editing import edit, edit_json

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def closures():
    return checks.closures()


@pytest.fixture()
def broken(tmp_path):
    """A copy of what the checks read; tests edit it and expect findings."""
    for d in ("occlum_instance", "images"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    return Layout(tmp_path)


def findings(layout: Layout, closures) -> list[str]:
    return checks.check_all(layout, closures)


def assert_reports(layout: Layout, closures, pattern: str) -> None:
    found = findings(layout, closures)
    assert any(re.search(pattern, f) for f in found), f"no finding matching {pattern!r}; got: {found}"


# ------------------------------------------------------------------ the committed files


def test_committed_files_pass_every_check(closures):
    assert checks.check_all(Layout(REPO), closures) == []


def test_import_closure_sees_the_real_dependencies(closures):
    action, ks = closures["action"], closures["keyservice"]
    assert not action.failed and not ks.failed
    assert {"numpy", "numpy.libs", "ai_edge_litert", "cryptography"} <= set(action.site_entries)
    # the action's key-service calls go through sesemi.stdlib_http: no urllib3 in its enclave
    assert "urllib3" not in action.site_entries
    assert {"flask", "waitress", "werkzeug", "cryptography"} <= set(ks.site_entries)
    assert "numpy" not in ks.site_entries  # the key service has no business with the model runtime
    assert "app.server" in action.first_party and "keyservice.service" in ks.first_party
    assert not any(m.startswith("keyservice") for m in action.first_party)
    assert "sqlite3" in {p.split("/")[0] for p in ks.stdlib}
    # lazy imports inside functions are seen too (keyservice.serve imports waitress)
    assert "waitress" in ks.site_entries


_FOOTPRINT = r"""
import importlib, os, sys
for m in sys.argv[1].split(","):
    importlib.import_module(m)
files, anon = {}, 0
for line in open("/proc/self/smaps"):
    p = line.split()
    if "-" in p[0] and not p[0].endswith(":") and len(p) >= 5:
        if len(p) >= 6 and p[5].startswith("/") and os.path.exists(p[5]):
            files[p[5]] = os.path.getsize(p[5])
    elif p[0] == "Anonymous:":
        anon += int(p[1]) * 1024
print((anon + sum(files.values())) >> 20)
"""


@pytest.mark.parametrize("appliance", ["action", "keyservice"])
def test_python_runtime_constant_covers_the_measured_footprint(appliance, closures):
    """The sizing rule's 'Python itself' term: anonymous memory plus every mapped
    shared object (Occlum copies mapped files into enclave memory), measured now."""
    mods = sorted(m for m in closures[appliance].first_party if not m.endswith("__main__"))
    out = subprocess.run([sys.executable, "-c", _FOOTPRINT, ",".join(mods)], capture_output=True, text=True,
                         cwd=REPO, env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    measured = int(out.stdout)
    assert measured <= sizing.PYTHON_RUNTIME_MIB[appliance], (
        f"{appliance} now needs {measured} MiB; raise PYTHON_RUNTIME_MIB in occlum_instance/sizing.py")


# ------------------------------------------------------------------ broken on purpose: Occlum.json


def test_debuggable_production_config_is_reported(broken, closures):
    edit_json(broken.template("action", "prod"), lambda d: d["metadata"].update(debuggable=True))
    assert_reports(broken, closures, r"action\.prod\.json: metadata\.debuggable must be false")


def test_debuggable_key_service_is_reported(broken, closures):
    edit_json(broken.template("keyservice", "prod"), lambda d: d["metadata"].update(debuggable=True))
    assert_reports(broken, closures, r"keyservice\.prod\.json: metadata\.debuggable must be false")


@pytest.mark.parametrize("field,value,pattern", [
    ("user_space_size", "256MB", r"user_space_size 256 MiB is below the computed need"),
    ("kernel_space_heap_size", "32MB", r"kernel_space_heap_size 32 MiB is below"),
    ("max_num_of_threads", 8, r"max_num_of_threads 8 is below"),
    ("user_space_size", "704M", r"not an Occlum size"),
])
def test_memory_limit_below_need_is_reported(broken, closures, field, value, pattern):
    edit_json(broken.template("action", "prod"), lambda d: d["resource_limits"].update({field: value}))
    assert_reports(broken, closures, pattern)


def test_missing_required_field_is_reported(broken, closures):
    edit_json(broken.template("keyservice", "dev"), lambda d: d["metadata"].pop("enable_kss"))
    assert_reports(broken, closures, r"missing required field 'enable_kss'")
    edit_json(broken.template("action", "dev"), lambda d: d.pop("feature"))
    assert_reports(broken, closures, r"action\.dev\.json: missing required field 'feature'")


def test_security_setting_from_the_host_is_reported(broken, closures):
    edit_json(broken.template("action", "prod"), lambda d: d["env"]["untrusted"].append("SESEMI_KEY_TTL"))
    assert_reports(broken, closures, r"security-relevant SESEMI_KEY_TTL must not be in env.untrusted")
    edit_json(broken.template("action", "prod"), lambda d: d["env"]["untrusted"].append("PYTHONPATH"))
    assert_reports(broken, closures, r"env.untrusted lets the host set PYTHONPATH")


def test_missing_or_unsafe_security_setting_is_reported(broken, closures):
    edit_json(broken.template("action", "prod"),
              lambda d: d["env"].update(default=[e for e in d["env"]["default"] if not e.startswith("SESEMI_TEE=")]))
    assert_reports(broken, closures, r"SESEMI_TEE must be set in env.default")
    edit_json(broken.template("keyservice", "prod"), lambda d: d["env"].update(default=[
        e.replace("SESEMI_INSECURE_SIM_ATTESTATION=0", "SESEMI_INSECURE_SIM_ATTESTATION=1")
        for e in d["env"]["default"]]))
    assert_reports(broken, closures, r"production needs SESEMI_INSECURE_SIM_ATTESTATION=0")


def test_env_typo_is_reported(broken, closures):
    edit(broken.template("action", "prod"), "SESEMI_KEY_TTL=60", "SESEMI_KEYTTL=60")
    assert_reports(broken, closures, r"SESEMI_KEYTTL is set but action's code never reads it")


def test_hostfs_in_production_is_reported(broken, closures):
    edit_json(broken.template("action", "prod"),
              lambda d: d["mount"].append({"target": "/host", "type": "hostfs", "source": "."}))
    assert_reports(broken, closures, r"hostfs mount at /host in production")


def test_key_service_database_off_its_sealed_mount_is_reported(broken, closures):
    edit(broken.template("keyservice", "prod"), "SESEMI_KS_DB=/data/ks.db", "SESEMI_KS_DB=/tmp/ks.db")
    assert_reports(broken, closures, r"SESEMI_KS_DB='/tmp/ks.db': its directory must be its own SEFS mount")


# ------------------------------------------------------------------ broken on purpose: copy_bom


def test_missing_third_party_entry_is_reported(broken, closures):
    edit(broken.occ / "bom" / "site-packages-action.yaml", "          - numpy.libs\n", "")
    assert_reports(broken, closures, r"numpy\.libs is imported at run time .* but no bom copies it")


def test_missing_key_service_dependency_is_reported(broken, closures):
    edit(broken.occ / "bom" / "site-packages-keyservice.yaml", "          - waitress\n", "")
    assert_reports(broken, closures, r"keyservice\.yaml: waitress is imported at run time")


def test_missing_first_party_package_is_reported(broken, closures):
    edit(broken.bom("action"), "  - code-app.yaml\n", "")
    assert_reports(broken, closures, r"package app \(imported by the action\) is not copied")


def test_missing_pack_is_reported(broken, closures):
    edit(broken.bom("action"), "  - pack.yaml\n", "")
    assert_reports(broken, closures, r"SESEMI_PACK=/opt/sesemi/pack/models.pack .* is not a file the bom puts")


def test_excluded_stdlib_module_is_reported(broken, closures):
    edit(broken.occ / "bom" / "python-runtime.yaml", "  - lib2to3\n", "  - lib2to3\n  - json\n")
    assert_reports(broken, closures, r"json/__init__\.py is needed at run time .* excludes it")


def test_unused_or_foreign_entries_are_reported(broken, closures):
    edit(broken.bom("action"), "  - code-app.yaml\n", "  - code-app.yaml\n  - code-keyservice.yaml\n")
    assert_reports(broken, closures, r"ships keyservice, which the action does not use")
    edit(broken.occ / "bom" / "site-packages-action.yaml", "          - pybase64\n", "          - pybase64\n          - flask\n")
    assert_reports(broken, closures, r"copies flask, which the action never imports")


def test_bom_typo_is_reported(broken, closures):
    edit(broken.occ / "bom" / "code-sesemi.yaml", "        dirs:", "        dir:")
    assert_reports(broken, closures, r"unknown key 'dir' \(copy_bom would silently ignore it\)")


def test_python_path_mismatch_is_reported(broken, closures):
    edit(broken.template("action", "prod"), "PYTHONPATH=/opt/sesemi/lib:", "PYTHONPATH=/opt/sesemi/code:")
    assert_reports(broken, closures, r"PYTHONPATH entry /opt/sesemi/code is not created by the bom")


# ------------------------------------------------------------------ broken on purpose: Dockerfiles


def test_dockerfiles_parse_and_have_the_expected_stages():
    for appliance, port in (("action", "8080"), ("keyservice", "8443")):
        stages, problems = checks.parse_dockerfile(REPO / "images" / f"{appliance}.Dockerfile")
        assert problems == []
        names = [s.name for s in stages]
        assert names[-1] == "runtime" and "builder" in names and f"{appliance}-sim" in names
        runtime = stages[-1]
        assert port in runtime.last("EXPOSE")["value"]
        _, argv, _ = split_entry(json.loads(runtime.last("ENTRYPOINT")["value"]))
        assert argv[1:] == ["run", "/bin/python3", "-m", "app" if appliance == "action" else "keyservice"]
        assert "occlum/occlum" in checks._arg_default(REPO / "images" / f"{appliance}.Dockerfile",
                                                       stages[names.index("builder")].base)


def test_entrypoint_not_in_the_bom_is_reported(broken, closures):
    edit(broken.dockerfile("action"), '"run", "/bin/python3", "-m", "app"]', '"run", "/bin/python3.11", "-m", "app"]',
         count=2)
    assert_reports(broken, closures, r"ENTRYPOINT runs /bin/python3\.11, which the bom does not put in the image")


def test_entrypoint_outside_occlum_run_is_reported(broken, closures):
    text = broken.dockerfile("keyservice").read_text()
    broken.dockerfile("keyservice").write_text(
        text.rsplit("ENTRYPOINT", 1)[0] + 'ENTRYPOINT ["/opt/python-occlum/bin/python3", "-m", "keyservice"]\n')
    assert_reports(broken, closures, r"ENTRYPOINT must be `occlum run PROGRAM")


def test_missing_expose_is_reported(broken, closures):
    text = broken.dockerfile("action").read_text()
    head, tail = text.rsplit("EXPOSE 8080\n", 1)
    broken.dockerfile("action").write_text(head + tail)
    assert_reports(broken, closures, r"stage runtime must EXPOSE 8080")


def test_wrong_default_target_is_reported(broken, closures):
    text = broken.dockerfile("action").read_text()
    broken.dockerfile("action").write_text(text + "\nFROM runtime AS debug\nENTRYPOINT [\"/bin/sh\"]\n")
    assert_reports(broken, closures, r"the last stage .* must be the production `runtime`")


def test_plain_stage_as_root_is_reported(broken, closures):
    edit(broken.dockerfile("action"), "USER 65534:65534\n", "")
    assert_reports(broken, closures, r"stage plain must not run as root")


# ------------------------------------------------------------------ broken on purpose: plaintext models


def test_plaintext_model_copied_into_an_image_is_reported(broken, closures):
    edit(broken.dockerfile("action"), "COPY app /opt/sesemi/lib/app\n",
         "COPY app /opt/sesemi/lib/app\nCOPY models/digits/digits.tflite /opt/sesemi/model.tflite\n")
    assert_reports(broken, closures, r"COPY models/digits/digits\.tflite: a plaintext model in the image")


def test_pack_outside_the_builder_is_reported(broken, closures):
    edit(broken.dockerfile("action"), "COPY app /opt/sesemi/lib/app\n",
         "COPY app /opt/sesemi/lib/app\nCOPY ${PACK} /srv/models.pack\n")
    assert_reports(broken, closures, r"the pack is copied into stage plain")
    edit(broken.dockerfile("action"), "COPY --from=builder /opt/occlum/build/bin /opt/occlum/build/bin\n",
         "COPY --from=builder /opt/occlum/build/bin /opt/occlum/build/bin\n"
         "COPY --from=builder /opt/sesemi/stage/models.pack /srv/models.pack\n")
    assert_reports(broken, closures, r"copies the staged pack out of the builder")


def test_unpackaged_instance_in_the_runtime_is_reported(broken, closures):
    edit(broken.dockerfile("keyservice"), "COPY --from=builder /opt/sesemi/out/pkg/keyservice_instance ",
         "COPY --from=builder /opt/sesemi/out/keyservice_instance ")
    assert_reports(broken, closures, r"only the packaged instance .* leaves it")


def test_plaintext_model_in_a_bom_is_reported(broken, closures):
    edit(broken.occ / "bom" / "pack.yaml", "            autodep: false\n",
         "            autodep: false\n          - digits.tflite\n")
    assert_reports(broken, closures, r"puts a plaintext model \(/opt/sesemi/stage/digits\.tflite\) into the image")


def test_integrity_only_writable_mount_is_reported(broken, closures):
    edit_json(broken.template("keyservice", "prod"),
              lambda d: [m.update(options={"MAC": ""}) for m in d["mount"] if m["target"] == "/data"])
    assert_reports(broken, closures, r"SEFS at /data has a MAC, i.e. is integrity-only")


def test_checker_cli_exits_zero_on_the_repository():
    out = subprocess.run([sys.executable, "-m", "occlum_instance.checks"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all passed" in out.stdout


def test_module_that_fails_to_import_is_reported(closures):
    """A first-party module that cannot import (e.g. a dependency missing from
    the environment) would hide its own imports from the closure: reported."""
    import dataclasses

    broken_closure = dataclasses.replace(closures["action"], failed=["app.runtime: ImportError: boom"])
    config = json.loads((REPO / "occlum_instance/templates/action.prod.json").read_text())
    found = checks.check_bom(Layout(REPO), "action", broken_closure, config, "action.prod.json")
    assert any("module fails to import: app.runtime" in f for f in found)


def test_build_context_excludes_plaintext_models():
    """`.dockerignore` keeps models/ (and everything in build/ but sealed packs) out of
    the image build context: a plaintext model cannot even reach `docker build`."""
    lines = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
    assert {"models", "build/*", "!build/*.pack", ".venv", ".git"} <= lines


# ------------------------------------------------------------------ broken on purpose: the hybrid HPKE's crypto library


@pytest.mark.parametrize("dockerfile", ["action.Dockerfile", "keyservice.Dockerfile"])
def test_cryptography_from_source_is_reported(broken, closures, dockerfile):
    edit(broken.images / dockerfile, "--find-links /wheels --only-binary cryptography", "--find-links /wheels")
    assert_reports(broken, closures, rf"{dockerfile}: stage deps may build cryptography from source")


@pytest.mark.parametrize("dockerfile", ["action.Dockerfile", "keyservice.Dockerfile"])
def test_missing_ml_kem_build_check_is_reported(broken, closures, dockerfile):
    edit(broken.images / dockerfile, "assert b.mlkem_supported()", "assert True")
    assert_reports(broken, closures, rf"{dockerfile}: stage deps does not check .* ML-KEM")


def test_plain_image_from_source_is_reported(broken, closures):
    edit(broken.images / "action.Dockerfile", '"--only-binary", "cryptography", ', "")
    assert_reports(broken, closures, r"stage plain-deps may build cryptography from source")


def test_old_cryptography_requirement_is_reported(broken, closures):
    text = (REPO / "pyproject.toml").read_text()
    (broken.root / "pyproject.toml").write_text(re.sub(r'"cryptography>=[\d.]+"', '"cryptography>=46"', text))
    assert_reports(broken, closures, r"pyproject.toml: cryptography must be >= 47")


def test_classical_kem_in_production_is_reported(broken, closures):
    edit(broken.template("keyservice", "prod"), "SESEMI_INSECURE_ALLOW_CLASSICAL_KEM=0",
         "SESEMI_INSECURE_ALLOW_CLASSICAL_KEM=1")
    assert_reports(broken, closures, r"production needs SESEMI_INSECURE_ALLOW_CLASSICAL_KEM=0")
    edit(broken.template("keyservice", "prod"), '            "SESEMI_INSECURE_ALLOW_CLASSICAL_KEM=1",\n', "")
    assert_reports(broken, closures, r"SESEMI_INSECURE_ALLOW_CLASSICAL_KEM must be set in env.default")
