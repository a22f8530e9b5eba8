"""The checks that the Occlum appliances can boot, each derived from
Occlum 0.30.1's source (the check's comment names the file).

Each check must pass on the committed files, fail on the files as they were at
commit c9f2376 (before these fixes: what it exists to catch), and fail on a
copy of today's files broken on purpose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import ActionConfig
from occlum_instance import checks, sizing
from occlum_instance.checks import Layout
from sesemi.errors import AccessDenied
from .editing import edit, edit_json

REPO = Path(__file__).resolve().parents[2]
BEFORE = "c9f2376"  # the files as they were before the boot fixes


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Layout:
    """occlum_instance/, images/ and app/config.py as of BEFORE, via `git show`."""
    if _git("cat-file", "-e", f"{BEFORE}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this clone (shallow?); the old-files tests need it")
    root = tmp_path_factory.mktemp("before")
    names = _git("ls-tree", "-r", "--name-only", BEFORE, "occlum_instance", "images", "app/config.py")
    for name in names.stdout.decode().split():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_git("show", f"{BEFORE}:{name}").stdout)
    return Layout(root)


@pytest.fixture()
def broken(tmp_path) -> Layout:
    for d in ("occlum_instance", "images"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "app").mkdir()
    shutil.copy(REPO / "app" / "config.py", tmp_path / "app" / "config.py")
    return Layout(tmp_path)


def reports(found: list[str], pattern: str) -> bool:
    return any(re.search(pattern, f) for f in found)


def schema_findings(layout: Layout) -> list[str]:
    out = []
    for a in checks.APPLIANCES:
        for kind in checks.CONFIG_KINDS:
            path = layout.template(a, kind)
            out += checks.check_config_schema(json.loads(path.read_text()), layout.rel(path))
    return out


def dockerfile_findings(layout: Layout, appliance: str) -> list[str]:
    return checks.check_dockerfile(layout, appliance)


# Each new check: how to run it on a layout, and what it must say about the old files.
CHECKS = {
    "image key (item 1)": (checks.check_image_key, r"gives init no key.*tools/occlum_build\.mk"),
    "release enclave needs jq (item 2)":
        (lambda lay: checks.check_runtime_packages(lay, "action"), r"does not install jq"),
    "ca-certificates before the https source (item 3)":
        (lambda lay: checks.check_runtime_packages(lay, "keyservice"),
         r"adds a package source .* before ca-certificates"),
    "DCAP quote-verify library (item 4)":
        (lambda lay: checks.check_runtime_packages(lay, "action"), r"does not install libsgx-dcap-quote-verify"),
    "QvE (item 4)": (lambda lay: checks.check_runtime_packages(lay, "keyservice"), r"does not install libsgx-ae-qve"),
    "ldd in the image build (item 4)":
        (lambda lay: checks.check_runtime_packages(lay, "action"), r"never checks with ldd"),
    "NSS modules (item 5)": (lambda lay: checks.check_nss(lay, "keyservice"), r"libnss_dns\.so\.2 is not in the image"),
    "nsswitch.conf (item 5)": (lambda lay: checks.check_nss(lay, "action"), r"/etc/nsswitch\.conf is not in the image"),
    "SEFS source created (item 6)":
        (lambda lay: dockerfile_findings(lay, "keyservice"), r"nothing creates the SEFS source /var/lib/sesemi-ks/sefs"),
    "/data sealed to MRSIGNER (item 7)": (checks.check_data_sealing, r"not with the MRSIGNER auto key"),
    "TCS reserve (item 8)": (checks.check_tcs_reserve, r"reserves no TCS for the PAL"),
    "no io_uring (item 9)": (schema_findings, r"feature: unknown field 'io_uring'"),
    "no second /proc (item 9)": (schema_findings, r"/proc is already mounted by Occlum"),
    "SESEMI_PACK classification":
        (lambda lay: checks.check_code_trusted_settings(lay.root),
         r"SESEMI_PACK must come from the measured env\.default, yet /init may set it"),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_passes_on_the_committed_files(name):
    run, _ = CHECKS[name]
    assert run(Layout(REPO)) == []


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_fails_on_the_files_before_the_fix(name, old):
    run, pattern = CHECKS[name]
    found = run(old)
    assert reports(found, pattern), f"{name}: no finding matching {pattern!r} on {BEFORE}'s files; got {found}"


# ------------------------------------------------------------------ broken on purpose: image key and sealing


def test_image_key_without_a_way_in_is_reported(broken):
    edit(broken.occ / "build.sh", 'occlum build "${SIGN_ARGS[@]}"', 'occlum build "${SIGN_ARGS[@]}" --image-key "$K"')
    assert reports(checks.check_image_key(broken), r"gives init no key")
    assert reports(checks.check_data_sealing(broken), r"not with the MRSIGNER auto key")


def test_built_in_image_key_boots_but_breaks_the_sealing(broken):
    edit(broken.occ / "build.sh", 'occlum build "${SIGN_ARGS[@]}"',
         'occlum build "${SIGN_ARGS[@]}" --image-key "$K" --buildin-image-key')
    assert checks.check_image_key(broken) == []
    assert reports(checks.check_data_sealing(broken), r"with the key built in, anyone holding the image can")


def test_init_ra_flow_counts_as_a_way_in(broken):
    edit(broken.occ / "build.sh", 'occlum new "$inst"', 'occlum new "$inst" --init-ra grpc_ratls')
    edit(broken.occ / "build.sh", 'occlum build "${SIGN_ARGS[@]}"', 'occlum build "${SIGN_ARGS[@]}" --image-key "$K"')
    assert checks.check_image_key(broken) == []


def test_build_script_refuses_an_image_key():
    r = subprocess.run(["bash", str(REPO / "occlum_instance" / "build.sh"), "--image-key", "/tmp/k"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "MRSIGNER auto key" in r.stderr


def test_temporary_database_mount_is_reported(broken):
    edit_json(broken.template("keyservice", "dev"),
              lambda d: [m.update(options={"temporary": True}) for m in d["mount"] if m["target"] == "/data"])
    assert reports(checks.check_data_sealing(broken), r"SEFS /data is temporary")


def test_key_service_without_its_own_sefs_is_reported(broken):
    edit_json(broken.template("keyservice", "prod"), lambda d: d.update(mount=d["mount"][:1]))
    assert reports(checks.check_data_sealing(broken), r"no SEFS of its own")


# ------------------------------------------------------------------ broken on purpose: runtime stages


def test_runtime_without_jq_is_reported(broken):
    edit(broken.dockerfile("action"), "ca-certificates jq &&", "ca-certificates &&")
    assert reports(checks.check_runtime_packages(broken, "action"), r"does not install jq: tools/occlum")


def test_runtime_without_quote_verify_is_reported(broken):
    edit(broken.dockerfile("keyservice"), "libsgx-dcap-ql libsgx-dcap-quote-verify", "libsgx-dcap-ql")
    edit(broken.dockerfile("keyservice"), "libsgx-ae-qve ", "")
    found = checks.check_runtime_packages(broken, "keyservice")
    assert reports(found, r"libsgx-dcap-quote-verify: the HW PAL links -lsgx_dcap_quoteverify \(src/pal/Makefile\)")
    assert reports(found, r"does not install libsgx-ae-qve")


def test_https_source_before_the_ca_bundle_is_reported(broken):
    df = broken.dockerfile("action")
    text = df.read_text()
    first = ("RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\\n"
             "        ca-certificates jq && \\\n    rm -rf /var/lib/apt/lists/*\n")
    copies = ("COPY --from=builder /etc/apt/sources.list.d/intel-sgx.list /etc/apt/sources.list.d/intel-sgx.list\n"
              "COPY --from=builder /etc/apt/trusted.gpg /etc/apt/trusted.gpg\n")
    assert first + copies in text
    df.write_text(text.replace(first + copies, copies + first))
    assert reports(checks.check_runtime_packages(broken, "action"), r"adds a package source .* before ca-certificates")


def test_source_written_in_the_same_run_before_the_ca_bundle_is_reported(broken):
    edit(broken.dockerfile("keyservice"), "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
         "--no-install-recommends \\\n        ca-certificates jq",
         "RUN echo 'deb https://example.invalid/sgx focal main' | tee /etc/apt/sources.list.d/x.list && "
         "apt-get update && apt-get install -y ca-certificates jq")
    assert reports(checks.check_runtime_packages(broken, "keyservice"),
                   r"writes an https package source before ca-certificates")


def test_ca_bundle_then_source_in_one_run_passes(broken):
    """Occlum's own runtime Dockerfile does it in one RUN, in this order."""
    edit(broken.dockerfile("keyservice"), "        ca-certificates jq && \\\n",
         "        ca-certificates jq && \\\n    echo 'deb https://example.invalid/sgx focal main' | "
         "tee /etc/apt/sources.list.d/x.list && \\\n")
    assert checks.check_runtime_packages(broken, "keyservice") == []


def test_runtime_without_the_ldd_check_is_reported(broken):
    edit(broken.dockerfile("action"), "ldd ", "true ")
    assert reports(checks.check_runtime_packages(broken, "action"), r"never checks with ldd")


# ------------------------------------------------------------------ broken on purpose: NSS, SEFS source, TCS


@pytest.mark.parametrize("lib", ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"])
def test_missing_nss_module_is_reported(broken, lib):
    edit(broken.occ / "bom" / "glibc-nss.yaml", f"          - /opt/occlum/glibc/lib/{lib}\n", "")
    assert reports(checks.check_nss(broken, "action"), rf"{re.escape(lib)} is not in the image: glibc dlopens it")


def test_nsswitch_without_the_hosts_file_is_reported(broken):
    edit(broken.occ / "etc" / "nsswitch.conf", "hosts:          files dns", "hosts:          dns")
    assert reports(checks.check_nss(broken, "keyservice"), r"hosts line must list files and dns")


def test_entrypoint_that_skips_the_sefs_source_is_reported(broken):
    edit(broken.dockerfile("keyservice"), '"/var/lib/sesemi-ks/sefs", ', "", count=2)
    assert reports(dockerfile_findings(broken, "keyservice"), r"stage runtime: nothing creates the SEFS source")


def test_entry_wrapper_not_copied_is_reported(broken):
    text = broken.dockerfile("keyservice").read_text()
    broken.dockerfile("keyservice").write_text(
        text.replace("COPY --chmod=0755 images/occlum-entry.sh /usr/local/bin/sesemi-occlum-entry\n", ""))
    assert reports(dockerfile_findings(broken, "keyservice"), r"which no COPY of images/occlum-entry\.sh puts there")


def test_entry_wrapper_that_creates_nothing_is_reported(broken):
    edit(broken.images / "occlum-entry.sh", '    mkdir -p -- "$1"\n', "")
    assert reports(checks.check_entry_wrapper(broken), r"must `mkdir -p` each argument")


def test_entry_wrapper_creates_the_directories_and_execs(tmp_path):
    target = tmp_path / "vol" / "sefs"
    r = subprocess.run(["sh", str(REPO / "images" / "occlum-entry.sh"), str(target), "--",
                        "sh", "-c", 'test -d "$0" && echo "ran $1"', str(target), "arg"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ran arg", r.stderr
    r = subprocess.run(["sh", str(REPO / "images" / "occlum-entry.sh"), str(target)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr


def test_sizing_without_a_tcs_reserve_is_reported(broken):
    edit(broken.occ / "sizing.py", "PAL_TCS_RESERVE = 1\n", "PAL_TCS_RESERVE = 0\n")
    assert reports(checks.check_tcs_reserve(broken), r"reserves no TCS for the PAL's interrupt thread")


def test_threads_without_room_for_the_pal_are_reported(broken):
    need = checks.demo_need("keyservice")
    edit_json(broken.template("keyservice", "prod"),
              lambda d: d["resource_limits"].update(max_num_of_threads=need.app_threads))
    assert reports(checks.check_tcs_reserve(broken), r"max_num_of_threads \d+ leaves no TCS for the PAL")


@pytest.mark.parametrize("concurrency,pool", [(1, 1), (7, 1), (8, 2), (27, 3), (64, 4)])
def test_sizing_always_leaves_the_reserve(concurrency, pool):
    for appliance in sizing.APPLIANCES:
        need = sizing.need(appliance, sizing.Settings(concurrency=concurrency, pool_size=pool, ks_threads=concurrency),
                           [1 << 20])
        assert need.tcs_reserve >= 1 and need.max_threads >= need.app_threads + need.tcs_reserve


# ------------------------------------------------------------------ broken on purpose: Occlum.json fields


@pytest.mark.parametrize("change,pattern", [
    (lambda d: d["feature"].update(io_uring=0), r"feature: unknown field 'io_uring'"),
    (lambda d: d["mount"].append({"target": "/dev", "type": "devfs"}), r"/dev is already mounted by Occlum"),
    (lambda d: d["mount"][1]["options"].update(autokey_policy=1) if len(d["mount"]) > 1
     else d["mount"][0]["options"].update(autokey_policy=1), r"unknown field 'autokey_policy'"),
    (lambda d: d["mount"].append({"target": "/x", "type": "async_sfs", "source": "./x"}),
     r"unsupported file system type 'async_sfs'"),
])
def test_fields_occlum_0301_does_not_pass_on_are_reported(broken, change, pattern):
    edit_json(broken.template("keyservice", "prod"), lambda d: (d["mount"][1].setdefault("options", {}), change(d)))
    assert reports(schema_findings(broken), pattern)


# ------------------------------------------------------------------ SESEMI_PACK


def test_pack_path_taken_from_init_is_reported(broken):
    edit(broken.root / "app" / "config.py", 'TRUSTED_ENV_HW = frozenset({"SESEMI_PACK"})', "TRUSTED_ENV_HW = frozenset()")
    assert reports(checks.check_code_trusted_settings(broken.root), r"SESEMI_PACK must come from the measured")


def test_init_may_not_name_the_pack_on_a_hardware_tee():
    with pytest.raises(AccessDenied, match="SESEMI_PACK"):
        ActionConfig(tee="occlum", pack_path="/opt/sesemi/pack/models.pack").with_untrusted_env(
            {"SESEMI_PACK": "/tmp/other.pack"})


def test_init_may_name_the_pack_under_sim():
    """The simulated measurement covers the manifest digest of the pack loaded."""
    cfg = ActionConfig(tee="sim").with_untrusted_env({"SESEMI_PACK": "/mnt/main.pack", "SESEMI_KS_URL": "http://ks"})
    assert cfg.pack_path == "/mnt/main.pack"


# ------------------------------------------------------------------ the SIM upgrade procedure (item 7)


def test_sim_pipeline_contains_the_upgrade_procedure():
    """ci/occlum-sim.sh needs Docker and Occlum, so it cannot run here; what can be
    checked is that the procedure is all there: a second key-service build with
    another configuration, the same signer and a new mrenclave required, the
    container replaced by it on the same data directory, the driver's checks."""
    sh = (REPO / "ci" / "occlum-sim.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "ci" / "occlum-sim.sh")], timeout=30).returncode == 0
    builds = re.findall(r'\$DOCKER build -f images/keyservice\.Dockerfile([^\n]*\n[^\n]*\n[^\n]*)', sh)
    assert len(builds) == 2 and sum("RENDER_OPTIONS=" in b for b in builds) == 1
    assert '-t "$NAME-keyservice-next"' in builds[1] or '-t "$NAME-keyservice-next"' in builds[0]
    assert re.search(r'field mrsigner .*!=.*field mrsigner', sh) and re.search(r'field mrenclave .*= .*field mrenclave', sh)
    assert re.search(r'--upgrade-ks "\$DOCKER rm -f \$NAME-ks >/dev/null && \$KS_RUN \$NAME-keyservice-next', sh)
    assert '-v $KS_DATA:/var/lib/sesemi-ks' in sh and "mktemp -d" in sh  # empty bind mount: the entry creates sefs/
    driver = (REPO / "ci" / "occlum_sim_e2e.py").read_text()
    assert '"--upgrade-ks"' in driver and "an upgrade (same signer, new build)" in driver
