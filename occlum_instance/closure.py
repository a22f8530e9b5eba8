"""The run-time import closure of an appliance, for checking the copy_bom files.

Two passes:

1. Static: walk the AST of every module of the appliance's package (e.g.
   `app`) and, transitively, of every first-party module it imports, taking
   every `import` statement, including the ones inside functions (lazy
   imports such as `import waitress` in `keyservice.serve`).
2. Dynamic: in a fresh interpreter, import all of those modules (first-party
   ones must import; a third-party one that is not installed is an optional
   fallback, e.g. `tflite_runtime`) and report `sys.modules` with each
   module's file, plus every file mapped into the process (/proc/self/maps:
   this is how the vendored `numpy.libs/*.so` show up).

Imports that a third-party package makes lazily, inside its own functions,
are not seen here; `make image-test` runs the real flow in a container whose
site-packages holds exactly the bom's list and would fail on those.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("sesemi", "app", "keyservice", "bundle_tool", "router")


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports_of(path: Path, module: str, is_package: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            # `from pkg import sub` may name a submodule
            names.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def static_scan(package: str, root: Path = REPO) -> tuple[list[str], list[str]]:
    """(first-party modules, other imported names) reachable from every module of `package`."""
    todo: list[str] = []
    pkg_dir = root / package
    for f in sorted(pkg_dir.rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        todo.append(".".join(parts))
    seen: set[str] = set()
    external: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _module_file(root, mod)
        if path is None:
            continue  # `from pkg import name` where name is not a module
        seen.add(mod)
        for name in _imports_of(path, mod, path.name == "__init__.py"):
            if name.split(".")[0] in FIRST_PARTY:
                # importing a.b.c imports a and a.b too
                parts = name.split(".")
                todo.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
            else:
                external.add(name)
    return sorted(seen), sorted(external)


_PROBE = r"""
import importlib, json, os, sys, sysconfig
at_startup = set(sys.modules)  # site.py and .pth files (a venv's editable finder): not the appliance's
first, external = json.loads(sys.argv[1])
sys.path.insert(0, sys.argv[2])
missing_optional, failed = [], []
for m in first:
    if m.endswith("__main__"):
        continue  # running it would start the server
    try:
        importlib.import_module(m)
    except Exception as exc:  # a first-party module must import
        failed.append(f"{m}: {type(exc).__name__}: {exc}")
for m in external:
    try:
        importlib.import_module(m)
    except ImportError:
        missing_optional.append(m)
    except Exception as exc:
        failed.append(f"{m}: {type(exc).__name__}: {exc}")
modules = {}
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if name in at_startup and f and any(f.startswith(p) for p in sys.path if "-packages" in p):
        continue
    modules[name] = os.path.realpath(f) if f else None
maps = set()
with open("/proc/self/maps") as fh:
    for line in fh:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            p = parts[5].strip()
            if not p.endswith("(deleted)") and os.path.exists(p):
                maps.add(os.path.realpath(p))
paths = sysconfig.get_paths()
print(json.dumps({
    "modules": modules, "maps": sorted(maps), "missing_optional": missing_optional, "failed": failed,
    "stdlib": os.path.realpath(paths["stdlib"]), "platstdlib": os.path.realpath(paths["platstdlib"]),
    "site": sorted({os.path.realpath(paths["purelib"]), os.path.realpath(paths["platlib"])}),
    "prefix": os.path.realpath(sys.base_prefix), "executable": os.path.realpath(sys.executable),
    "version": list(sys.version_info[:2]),
}))
"""


@dataclass
class Closure:
    package: str
    first_party: dict[str, str | None]          # module -> file
    site_entries: dict[str, list[str]]          # top-level site-packages entry -> modules/files needing it
    stdlib: dict[str, list[str]]                # stdlib path relative to lib/pythonX.Y -> modules
    system_libs: list[str]                      # copied by copy_bom's autodep, not listed in boms
    missing_optional: list[str]
    failed: list[str]
    version: tuple[int, int]
    raw: dict = field(default_factory=dict, repr=False)


def _top_entry(path: str, roots: list[str]) -> tuple[str, str] | None:
    for r in roots:
        if path == r or not path.startswith(r.rstrip("/") + "/"):
            continue
        return r, path[len(r.rstrip("/")) + 1:].split("/")[0]
    return None


def runtime_closure(package: str, python: str = sys.executable, root: Path = REPO) -> Closure:
    first, external = static_scan(package, root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([python, "-c", _PROBE, json.dumps([first, external]), str(root)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=str(root))
    if out.returncode != 0:
        raise RuntimeError(f"import probe for {package} failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout)
    site_roots = data["site"]
    std_roots = sorted({data["stdlib"], data["platstdlib"]})
    root_s = str(root.resolve())
    first_party: dict[str, str | None] = {}
    site: dict[str, list[str]] = {}
    std: dict[str, list[str]] = {}
    system: set[str] = set()

    def place(path: str, who: str) -> None:
        if path.startswith(root_s + "/"):
            top = path[len(root_s) + 1:].split("/")[0]
            if top in FIRST_PARTY:
                return
        hit = _top_entry(path, site_roots)
        if hit:
            site.setdefault(hit[1], []).append(who)
            return
        for s in std_roots:
            if path.startswith(s + "/"):
                std.setdefault(path[len(s) + 1:], []).append(who)
                return
        if path != data["executable"]:
            system.add(path)

    for name, f in data["modules"].items():
        if name.split(".")[0] in FIRST_PARTY:
            first_party[name] = f
            continue
        if f:
            place(f, name)
    for p in data["maps"]:
        place(p, "(mapped) " + os.path.basename(p))
    return Closure(package, first_party, site, std, sorted(system), data["missing_optional"], data["failed"],
                   tuple(data["version"]), data)


def current_site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


if __name__ == "__main__":  # python -m occlum_instance.closure app
    c = runtime_closure(sys.argv[1] if len(sys.argv) > 1 else "app")
    print(json.dumps({"first_party": sorted(c.first_party), "site": sorted(c.site_entries),
                      "stdlib_top": sorted({p.split("/")[0] for p in c.stdlib}),
                      "system": c.system_libs, "missing_optional": c.missing_optional, "failed": c.failed},
                     indent=1))
