"""Build the plain action image (images/action.Dockerfile, target `plain`) with
podman on a machine that cannot pull images.

* The base (the Dockerfile's PLAIN_BASE, normally python:3.11-slim) is made from
  this machine's files: the Python prefix that runs the tests, copied onto
  `FROM scratch`, plus exactly the shared libraries `ldd` says it and the
  packages need (glibc, libstdc++, libssl, ...), a passwd with `nobody`, /tmp.
* The `plain-deps` stage is replaced (`--build-context plain-deps=DIR`) by a
  site-packages holding exactly the entries of the action's copy_bom list
  (occlum_instance/bom/site-packages-action.yaml), copied from this venv. The
  container test therefore also proves that list is complete at run time.

    python tests/image/podman_build.py      # prints the image name
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "image-test"
BASE_TAG = "localhost/sesemi-pybase:{ver}"
IMAGE_TAG = "localhost/sesemi-action-plain:test"
PODMAN = ["podman"]
STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data",
               "__phello__", "idle_test"}


def _ldd(paths: list[Path]) -> set[str]:
    libs: set[str] = set()
    for i in range(0, len(paths), 64):
        out = subprocess.run(["ldd", *map(str, paths[i:i + 64])], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s+(/\S+ld-linux\S*)\s", line)
            if m:
                libs.add(m.group(1))
    return libs


def _is_elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def _in_usr(path: str) -> str:
    """Debian is merged-/usr: /lib/x -> /usr/lib/x."""
    for top in ("/lib/", "/lib64/", "/bin/", "/sbin/"):
        if path.startswith(top):
            return "/usr" + path
    return path


def action_deps_entries() -> list[str]:
    doc = yaml.safe_load((REPO / "occlum_instance" / "bom" / "site-packages-action.yaml").read_text())
    names: list[str] = []
    for t in doc["targets"]:
        for c in t.get("copy") or []:
            names += [str(d) for d in c.get("dirs") or []]
            names += [f if isinstance(f, str) else f["name"] for f in c.get("files") or []]
    return names


def make_deps_context(dest: Path) -> Path:
    site = Path(sysconfig.get_paths()["platlib"])
    target = dest / "opt" / "sesemi" / "site-packages"
    if dest.exists():
        shutil.rmtree(dest)
    target.mkdir(parents=True)
    for name in action_deps_entries():
        # the bom names extension modules with CPython 3.11's tag; this venv may differ
        src = site / name
        if not src.exists():
            stem = name.split(".cpython-")[0]
            found = sorted(site.glob(stem + ".*.so"))
            if not found:
                raise FileNotFoundError(f"{name} (from the action's bom) is not installed in {site}")
            src = found[0]
        if src.is_dir():
            shutil.copytree(src, target / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            _copy(src, target / src.name)
    return dest


def make_base_rootfs(dest: Path, deps_dir: Path) -> Path:
    """A minimal root file system: this Python, its stdlib, and the shared objects it and the deps need."""
    prefix = Path(sys.base_prefix)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    exe = Path(os.path.realpath(sys.executable))
    root = dest / "rootfs"
    if dest.exists():
        shutil.rmtree(dest)
    for d in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/local/bin", "usr/local/lib", "etc",
              "root", "tmp", "srv"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/bin")):
        (root / link).symlink_to(target)
    os.chmod(root / "tmp", 0o1777)
    _copy(exe, root / "usr/local/bin" / f"python{ver}")
    for name in ("python3", "python"):
        (root / "usr/local/bin" / name).symlink_to(f"python{ver}")
    stdlib = prefix / "lib" / f"python{ver}"
    dst_std = root / "usr/local/lib" / f"python{ver}"
    shutil.copytree(stdlib, dst_std, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP or n.startswith("config-")])
    (dst_std / "site-packages").mkdir()
    elves = [exe] + [p for p in dst_std.rglob("*.so")] + [p for p in deps_dir.rglob("*.so*") if _is_elf(p)]
    libpy = prefix / "lib" / f"libpython{ver}.so.1.0"
    if libpy.exists():
        elves.append(libpy)
    libs = _ldd(elves)
    if libpy.exists():
        libs.add(str(libpy))
    deps_real = str(deps_dir.resolve())
    for lib in sorted(libs):
        if lib.startswith(deps_real) or lib.startswith(str(stdlib)):
            continue  # shipped with the package (e.g. numpy.libs) or the stdlib
        if lib.startswith(str(prefix)):
            _copy(Path(lib), root / "usr/lib/x86_64-linux-gnu" / Path(lib).name)
        else:
            _copy(Path(lib), root / _in_usr(lib).lstrip("/"))
    ld = Path("/lib64/ld-linux-x86-64.so.2")
    _copy(ld, root / "usr/lib64" / ld.name)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (dest / "Containerfile").write_text(
        "# A Python base made from the test machine's own files (no image can be pulled here).\n"
        "FROM scratch\nCOPY rootfs/ /\n"
        "ENV PATH=/usr/local/bin:/usr/bin LANG=C.UTF-8\n")
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
    return dest


def podman(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=check)


def build_plain_image(log=print) -> str:
    t0 = time.monotonic()
    ver = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    deps = make_deps_context(WORK / "plain-deps")
    base_dir = make_base_rootfs(WORK / "base", deps / "opt" / "sesemi" / "site-packages")
    t1 = time.monotonic()
    base = BASE_TAG.format(ver=ver)
    podman("build", "--runtime", "runc", "-q", "-f", str(base_dir / "Containerfile"), "-t", base, str(base_dir))
    t2 = time.monotonic()
    podman("build", "--runtime", "runc", "-q", "-f", str(REPO / "images" / "action.Dockerfile"), "--target", "plain",
           "--build-arg", f"PLAIN_BASE={base}", "--build-context", f"plain-deps={deps}", "-t", IMAGE_TAG, str(REPO))
    t3 = time.monotonic()
    log(f"image {IMAGE_TAG}: rootfs {t1 - t0:.1f}s, base image {t2 - t1:.1f}s, plain stage {t3 - t2:.1f}s")
    return IMAGE_TAG


if __name__ == "__main__":
    print(build_plain_image())
