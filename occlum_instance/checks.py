"""Static checks for the Occlum appliances and their images.

Every check returns a list of findings (strings naming the file and the
problem); an empty list means the check passed. tests/static runs them on
the committed files and on copies broken on purpose; `python -m
occlum_instance.checks` runs them all and exits non-zero on any finding.

What is checked, and why (docs/occlum.md has the long form):

* Occlum.json: the fields Occlum's config generator (gen_internal_conf)
  requires, with the types and memory-size syntax it parses; production
  configs are not debuggable and log nothing; product_id/version_number are
  the project's ISV_PROD_ID/ISV_SVN; every security-relevant setting is in
  env.default (measured) with a safe value, and env.untrusted holds only
  harmless names; every SESEMI_* name is one the code reads (a typo would be
  silently ignored); memory limits cover sizing.need() for the demo pack;
  writable mounts are encrypted SEFS and there is no hostfs in production.
* copy_bom files: the schema copy_bom parses (strictly: unknown keys are
  errors here, copy_bom would ignore them), and that they put into the image
  every module the appliance imports at run time (closure.py), the
  interpreter, the packages on PYTHONPATH and the pack; and nothing that
  belongs to the other appliance.
* Dockerfiles: they parse, stages and COPY --from references resolve, the
  final stage is the production runtime, ENTRYPOINT runs `occlum run` on a
  program the bom puts into the image (under entry_points) with `-m <pkg>`,
  the action exposes 8080 and the key service 8443.
* No plaintext model is put anywhere outside the encrypted image: no model
  file in a COPY/ADD or a bom, the pack goes only into the builder, build.sh
  always passes --image-key and refuses a file that is not a sealed pack.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import sizing
from .closure import FIRST_PARTY, Closure, runtime_closure

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "digits" / "digits.tflite"
MODEL_SUFFIXES = (".tflite", ".onnx", ".pb", ".h5", ".keras", ".pt", ".pth", ".safetensors", ".ckpt",
                  ".mlmodel", ".gguf", ".pkl", ".joblib")

# Names a platform may set (env.untrusted): they change where to listen or
# which key service to ask, never what the enclave protects.
HARMLESS_UNTRUSTED = {
    "action": {"SESEMI_PORT", "SESEMI_HOST", "SESEMI_KS_URL"},
    "keyservice": {"SESEMI_PORT", "SESEMI_HOST"},
}
# Must be in env.default (measured) and never untrusted.
SECURITY_RELEVANT = {
    "action": ("SESEMI_TEE", "SESEMI_KEY_TTL", "SESEMI_INSECURE_SIM_DEBUG", "SESEMI_PACK", "SESEMI_KS_KEY"),
    "keyservice": ("SESEMI_TEE", "SESEMI_INSECURE_SIM_ATTESTATION", "SESEMI_KS_TOKEN_TTL", "SESEMI_KS_DB"),
}
PRODUCTION_VALUES = {
    "action": {"SESEMI_TEE": "occlum", "SESEMI_INSECURE_SIM_DEBUG": "0"},
    "keyservice": {"SESEMI_TEE": "occlum", "SESEMI_INSECURE_SIM_ATTESTATION": "0"},
}
INFORMATIONAL_ENV = {"SESEMI_VERSION"}


@dataclass(frozen=True)
class Appliance:
    name: str
    package: str          # `python3 -m <package>`
    port: int
    sources: tuple[str, ...]  # files whose string literals name the env settings the code reads

    @property
    def top_bom(self) -> str:
        return f"{self.name}.yaml"

    @property
    def dockerfile(self) -> str:
        return f"{self.name}.Dockerfile"

    @property
    def sim_stage(self) -> str:
        return f"{self.name}-sim"


APPLIANCES = {
    "action": Appliance("action", "app", 8080, ("app/config.py", "app/__main__.py")),
    "keyservice": Appliance("keyservice", "keyservice", 8443, ("keyservice/__main__.py", "keyservice/config.py")),
}
CONFIG_KINDS = ("prod", "dev")


@dataclass
class Layout:
    """Where the checked files are: a repository root (or a copy of its parts)."""

    root: Path = REPO

    @property
    def occ(self) -> Path:
        return self.root / "occlum_instance"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def template(self, appliance: str, kind: str) -> Path:
        return self.occ / "templates" / f"{appliance}.{kind}.json"

    def bom(self, appliance: str) -> Path:
        return self.occ / APPLIANCES[appliance].top_bom

    def dockerfile(self, appliance: str) -> Path:
        return self.images / APPLIANCES[appliance].dockerfile

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)


# --------------------------------------------------------------------------- Occlum.json

def _is_size(v: Any) -> bool:
    try:
        sizing.parse_size(v)
        return True
    except ValueError:
        return False


def _check_keys(where: str, obj: Any, required: dict[str, type | tuple], optional: dict[str, type | tuple],
                out: list[str]) -> None:
    if not isinstance(obj, dict):
        out.append(f"{where}: must be an object")
        return
    for k, t in required.items():
        if k not in obj:
            out.append(f"{where}: missing required field {k!r}")
        elif not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
            out.append(f"{where}.{k}: wrong type {type(obj[k]).__name__}")
    for k, t in optional.items():
        if k in obj and (not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool))):
            out.append(f"{where}.{k}: wrong type {type(obj[k]).__name__}")
    for k in obj:
        if k not in required and k not in optional:
            out.append(f"{where}: unknown field {k!r} (Occlum ignores it, so it is a typo or a mistake)")


def env_default(config: dict) -> dict[str, str]:
    out = {}
    for entry in config.get("env", {}).get("default", []):
        if isinstance(entry, str) and "=" in entry:
            k, _, v = entry.partition("=")
            out[k] = v
    return out


def check_config_schema(config: Any, where: str) -> list[str]:
    """The fields Occlum's config generator requires, their types and size syntax."""
    out: list[str] = []
    if not isinstance(config, dict):
        return [f"{where}: not a JSON object"]
    _check_keys(where, config, {"resource_limits": dict, "process": dict, "entry_points": list, "env": dict,
                                "metadata": dict, "feature": dict, "mount": list}, {}, out)
    rl = config.get("resource_limits", {})
    _check_keys(f"{where}.resource_limits", rl,
                {"user_space_size": str, "kernel_space_heap_size": str, "kernel_space_stack_size": str,
                 "max_num_of_threads": int},
                {"init_num_of_threads": int, "kernel_space_heap_max_size": str, "user_space_max_size": str}, out)
    proc = config.get("process", {})
    _check_keys(f"{where}.process", proc,
                {"default_stack_size": str, "default_heap_size": str, "default_mmap_size": str}, {}, out)
    for section, obj in (("resource_limits", rl), ("process", proc)):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k.endswith("_size") and isinstance(v, str) and not _is_size(v):
                    out.append(f"{where}.{section}.{k}: {v!r} is not an Occlum size (e.g. \"256MB\")")
    if isinstance(rl, dict) and isinstance(rl.get("max_num_of_threads"), int) and rl["max_num_of_threads"] < 1:
        out.append(f"{where}.resource_limits.max_num_of_threads must be >= 1")
    for lo, hi in (("kernel_space_heap_size", "kernel_space_heap_max_size"), ("user_space_size", "user_space_max_size")):
        if isinstance(rl, dict) and _is_size(rl.get(lo)) and _is_size(rl.get(hi)):
            if sizing.parse_size(rl[lo]) > sizing.parse_size(rl[hi]):
                out.append(f"{where}.resource_limits.{lo} exceeds {hi}")
    eps = config.get("entry_points", [])
    if isinstance(eps, list):
        if not eps:
            out.append(f"{where}.entry_points: empty (nothing could be run)")
        for ep in eps:
            if not isinstance(ep, str) or not ep.startswith("/"):
                out.append(f"{where}.entry_points: {ep!r} must be an absolute path")
    env = config.get("env", {})
    _check_keys(f"{where}.env", env, {"default": list, "untrusted": list}, {}, out)
    if isinstance(env, dict):
        seen: set[str] = set()
        for e in env.get("default", []) if isinstance(env.get("default"), list) else []:
            if not isinstance(e, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", e):
                out.append(f"{where}.env.default: {e!r} is not NAME=VALUE")
                continue
            name = e.split("=", 1)[0]
            if name in seen:
                out.append(f"{where}.env.default: {name} is set twice")
            seen.add(name)
        for n in env.get("untrusted", []) if isinstance(env.get("untrusted"), list) else []:
            if not isinstance(n, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", n):
                out.append(f"{where}.env.untrusted: {n!r} is not a variable name")
    md = config.get("metadata", {})
    _check_keys(f"{where}.metadata", md,
                {"product_id": int, "version_number": int, "debuggable": bool, "enable_kss": bool,
                 "family_id": dict, "ext_prod_id": dict}, {"disable_log": bool, "pkru": int}, out)
    if isinstance(md, dict):
        for k in ("product_id", "version_number"):
            if isinstance(md.get(k), int) and not 0 <= md[k] <= 0xFFFF:
                out.append(f"{where}.metadata.{k}: {md[k]} does not fit SGX's 16-bit field")
        for k in ("family_id", "ext_prod_id"):
            v = md.get(k)
            if isinstance(v, dict):
                _check_keys(f"{where}.metadata.{k}", v, {"high": str, "low": str}, {}, out)
                for part in ("high", "low"):
                    if isinstance(v.get(part), str) and not re.match(r"^0x[0-9a-fA-F]{1,16}$", v[part]):
                        out.append(f"{where}.metadata.{k}.{part}: {v[part]!r} is not a 64-bit hex string")
    feat = config.get("feature", {})
    _check_keys(f"{where}.feature", feat, {},
                {"amx": int, "pkru": int, "io_uring": int, "enable_edmm": bool, "enable_posix_shm": bool}, out)
    mounts = config.get("mount", [])
    if isinstance(mounts, list):
        for i, m in enumerate(mounts):
            out += _check_mount(m, f"{where}.mount[{i}]")
        roots = [m for m in mounts if isinstance(m, dict) and m.get("target") == "/" and m.get("type") == "unionfs"]
        if len(roots) != 1:
            out.append(f"{where}.mount: needs exactly one root unionfs (Occlum refuses the config otherwise)")
        else:
            layers = roots[0].get("options", {}).get("layers") or []
            image = [lyr for lyr in layers if isinstance(lyr, dict) and lyr.get("type") == "sefs"
                     and "MAC" in lyr.get("options", {})]
            if len(layers) != 2 or len(image) != 1 or layers[0] is not image[0]:
                out.append(f"{where}.mount: the root unionfs needs the image SEFS (with a MAC option) as its "
                           f"lower layer and one writable SEFS above it")
            elif layers[1].get("type") != "sefs" or "MAC" in layers[1].get("options", {}):
                out.append(f"{where}.mount: the root's upper layer must be a writable (encrypted) SEFS")
        targets = [m.get("target") for m in mounts if isinstance(m, dict)]
        dups = {t for t in targets if targets.count(t) > 1}
        if dups:
            out.append(f"{where}.mount: target(s) mounted twice: {sorted(dups)}")
    return out


_MOUNT_TYPES = {"sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs", "async_sfs", "ext2"}


def _check_mount(m: Any, where: str) -> list[str]:
    out: list[str] = []
    _check_keys(where, m, {"type": str, "target": str}, {"source": str, "options": dict}, out)
    if not isinstance(m, dict):
        return out
    if m.get("type") not in _MOUNT_TYPES:
        out.append(f"{where}: unsupported file system type {m.get('type')!r}")
    if isinstance(m.get("target"), str) and not m["target"].startswith("/"):
        out.append(f"{where}: target must be an absolute path")
    if m.get("type") in ("sefs", "hostfs") and not m.get("source"):
        out.append(f"{where}: a {m['type']} mount needs a source")
    opts = m.get("options", {})
    if isinstance(opts, dict):
        _check_keys(f"{where}.options", opts, {},
                    {"MAC": str, "layers": list, "temporary": bool, "cache_size": str, "disk_size": str,
                     "autokey_policy": int, "index": int, "sefs_cache_size": str, "async_sfs_total_size": str,
                     "page_cache_size": str}, out)
        for lyr_i, lyr in enumerate(opts.get("layers") or []):
            out += _check_mount(lyr, f"{where}.options.layers[{lyr_i}]")
    return out


def check_config_policy(config: dict, appliance: str, kind: str, where: str) -> list[str]:
    """Security and consistency rules on top of the schema."""
    out: list[str] = []
    md = config.get("metadata", {})
    env = env_default(config)
    untrusted = set(config.get("env", {}).get("untrusted", []))
    if kind == "prod":
        if md.get("debuggable") is not False:
            out.append(f"{where}: metadata.debuggable must be false in a production config "
                       f"(a debug enclave's memory is readable by the host)")
        if md.get("disable_log") is False:
            out.append(f"{where}: metadata.disable_log must not be false in production (LibOS logs leak paths "
                       f"and sizes)")
        for k, v in PRODUCTION_VALUES[appliance].items():
            if env.get(k) != v:
                out.append(f"{where}: production needs {k}={v} in env.default (has {env.get(k)!r})")
        for m in config.get("mount", []):
            if isinstance(m, dict) and m.get("type") == "hostfs":
                out.append(f"{where}: hostfs mount at {m.get('target')} in production: anything written there "
                           f"leaves the enclave in plaintext")
    for name in SECURITY_RELEVANT[appliance]:
        if name not in env:
            out.append(f"{where}: security-relevant {name} must be set in env.default (measured)")
        if name in untrusted:
            out.append(f"{where}: security-relevant {name} must not be in env.untrusted")
    for name in sorted(untrusted - HARMLESS_UNTRUSTED[appliance]):
        out.append(f"{where}: env.untrusted lets the host set {name}; only "
                   f"{sorted(HARMLESS_UNTRUSTED[appliance])} are harmless")
    ttl = env.get("SESEMI_KEY_TTL") if appliance == "action" else env.get("SESEMI_KS_TOKEN_TTL")
    try:
        if ttl is not None and not 0 < float(ttl) <= 3600:
            out.append(f"{where}: TTL {ttl} outside (0, 3600] seconds")
    except ValueError:
        out.append(f"{where}: TTL {ttl!r} is not a number")
    if env.get("SESEMI_TEE") not in (None, "occlum", "sim"):
        out.append(f"{where}: SESEMI_TEE={env.get('SESEMI_TEE')!r} is not a TEE backend")
    for name in ("PYTHONHOME", "PYTHONPATH"):
        if name not in env:
            out.append(f"{where}: env.default needs {name} (the interpreter finds nothing without it)")
    for m in config.get("mount", []):
        if isinstance(m, dict) and m.get("type") == "sefs" and m.get("target") != "/" \
                and "MAC" in (m.get("options") or {}):
            out.append(f"{where}: SEFS at {m.get('target')} has a MAC, i.e. is integrity-only (not encrypted)")
    if appliance == "keyservice":
        db = env.get("SESEMI_KS_DB", "")
        mounts = {m.get("target"): m for m in config.get("mount", []) if isinstance(m, dict)}
        db_dir = posixpath.dirname(db)
        m = mounts.get(db_dir)
        if not m or m.get("type") != "sefs":
            out.append(f"{where}: SESEMI_KS_DB={db!r}: its directory must be its own SEFS mount (sealed, "
                       f"persistent across restarts)")
        elif str(m.get("source", "")).startswith(("./build", "build")):
            out.append(f"{where}: the database SEFS source must not be inside the instance's build/ "
                       f"(rebuilt on every build)")
    return out


def check_env_names_read(config: dict, appliance: str, where: str, root: Path = REPO) -> list[str]:
    """Every SESEMI_* name in the config is read by the code (catches typos)."""
    text = "".join((root / s).read_text(encoding="utf-8") for s in APPLIANCES[appliance].sources
                   if (root / s).is_file())
    names = set(env_default(config)) | set(config.get("env", {}).get("untrusted", []))
    return [f"{where}: {n} is set but {appliance}'s code never reads it (typo?)"
            for n in sorted(names) if n.startswith("SESEMI_") and n not in INFORMATIONAL_ENV
            and f'"{n}"' not in text]


def check_code_trusted_settings(root: Path = REPO) -> list[str]:
    """The action's own list of trusted settings (app/config.py TRUSTED_ENV, refused
    from /init) must all be measured, i.e. required in env.default here."""
    import ast

    src = root / "app" / "config.py"
    try:
        tree = ast.parse(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TRUSTED_ENV"
                                                for t in node.targets):
            names = {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return [f"app/config.py: trusted setting {n} is not required in the action's env.default "
            f"(SECURITY_RELEVANT in occlum_instance/checks.py)"
            for n in sorted(names - set(SECURITY_RELEVANT["action"]))]


def check_identity(config: dict, where: str) -> list[str]:
    """product_id / version_number / SESEMI_VERSION come from the project's version."""
    import sesemi

    out = []
    md = config.get("metadata", {})
    if md.get("product_id") != sesemi.ISV_PROD_ID:
        out.append(f"{where}: metadata.product_id {md.get('product_id')} != sesemi.ISV_PROD_ID {sesemi.ISV_PROD_ID}")
    if md.get("version_number") != sesemi.ISV_SVN:
        out.append(f"{where}: metadata.version_number {md.get('version_number')} != sesemi.ISV_SVN {sesemi.ISV_SVN}")
    if env_default(config).get("SESEMI_VERSION") != sesemi.__version__:
        out.append(f"{where}: SESEMI_VERSION != sesemi.__version__ {sesemi.__version__}")
    return out


def check_memory(config: dict, need: sizing.Need, where: str) -> list[str]:
    out = []
    rl, proc = config.get("resource_limits", {}), config.get("process", {})
    try:
        have = {
            "user_space_size": sizing.parse_size(rl.get("user_space_size", "0B")),
            "kernel_space_heap_size": sizing.parse_size(rl.get("kernel_space_heap_size", "0B")),
            "default_stack_size": sizing.parse_size(proc.get("default_stack_size", "0B")),
        }
    except ValueError as exc:
        return [f"{where}: {exc}"]
    want = {"user_space_size": need.user_space_mib, "kernel_space_heap_size": need.kernel_heap_mib,
            "default_stack_size": need.stack_mib}
    for k, mib in want.items():
        if have[k] < mib * sizing.MiB:
            out.append(f"{where}: {k} {have[k] >> 20} MiB is below the computed need of {mib} MiB "
                       f"(sizing: {need.terms})")
    if not isinstance(rl.get("max_num_of_threads"), int) or rl["max_num_of_threads"] < need.max_threads:
        out.append(f"{where}: max_num_of_threads {rl.get('max_num_of_threads')} is below the computed "
                   f"{need.max_threads}")
    if env_default(config).get("MALLOC_ARENA_MAX") is None:
        out.append(f"{where}: MALLOC_ARENA_MAX must be set: glibc reserves 64 MiB of user space per arena")
    return out


def demo_need(appliance: str) -> sizing.Need:
    return sizing.need(appliance, sizing.Settings(),
                       [DEMO_MODEL.stat().st_size] if appliance == "action" else [])


def check_templates(layout: Layout) -> list[str]:
    out: list[str] = []
    for appliance in APPLIANCES:
        for kind in CONFIG_KINDS:
            path = layout.template(appliance, kind)
            where = layout.rel(path)
            try:
                config = json.loads(path.read_text())
            except FileNotFoundError:
                out.append(f"{where}: missing")
                continue
            except json.JSONDecodeError as exc:
                out.append(f"{where}: not valid JSON ({exc})")
                continue
            out += check_config_schema(config, where)
            out += check_config_policy(config, appliance, kind, where)
            out += check_env_names_read(config, appliance, where)
            out += check_memory(config, demo_need(appliance), where)
    return out


def check_rendered(config: dict, appliance: str, kind: str, need: sizing.Need, where: str) -> list[str]:
    return (check_config_schema(config, where) + check_config_policy(config, appliance, kind, where)
            + check_env_names_read(config, appliance, where) + check_identity(config, where)
            + check_memory(config, need, where))


# --------------------------------------------------------------------------- copy_bom

@dataclass
class BomEntry:
    kind: str            # "dir" (copies the dir itself), "contents" (dir/), "file", "link", "mkdir"
    image: str           # path inside the image
    source: str          # path on the builder ("" for mkdir)
    bom: str             # file it came from
    excludes: tuple[str, ...] = ()


@dataclass
class Bom:
    entries: list[BomEntry] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def provides(self, image_path: str) -> BomEntry | None:
        image_path = posixpath.normpath(image_path)
        for e in self.entries:
            if e.image == image_path:
                return e
        for e in self.entries:
            if e.kind in ("dir", "contents") and image_path.startswith(e.image.rstrip("/") + "/"):
                rel = image_path[len(e.image.rstrip("/")) + 1:]
                if not _excluded(rel, e.excludes):
                    return e
        return None

    def excluded_by(self, image_path: str) -> BomEntry | None:
        for e in self.entries:
            if e.kind in ("dir", "contents") and image_path.startswith(e.image.rstrip("/") + "/"):
                if _excluded(image_path[len(e.image.rstrip("/")) + 1:], e.excludes):
                    return e
        return None


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    """rsync --exclude: a pattern without '/' matches any path component."""
    parts = rel.split("/")
    for p in patterns:
        if "/" in p.strip("/"):
            if fnmatch.fnmatch(rel, p.strip("/")) or fnmatch.fnmatch(rel, p.strip("/") + "/*"):
                return True
        elif any(fnmatch.fnmatch(c, p.strip("/")) for c in parts):
            return True
    return False


_BOM_KEYS = {"includes": list, "excludes": list, "targets": list}
_TARGET_KEYS = {"target": str, "mkdirs": list, "createlinks": list, "copy": list}
_SOURCE_KEYS = {"from": str, "dirs": list, "files": list}
_FILE_KEYS = {"name": str, "hash": str, "autodep": bool, "rename": str}


def load_bom(top: Path, include_dirs: Iterable[Path] = ()) -> Bom:
    """Parse a copy_bom file and its includes (searched beside the including
    file, then in include_dirs, as copy_bom does), strictly."""
    bom = Bom()
    queue, seen = [top], set()
    dirs = list(include_dirs)
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        bom.files.append(path)
        where = str(path.name)
        try:
            doc = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            bom.findings.append(f"{where}: missing")
            continue
        except yaml.YAMLError as exc:
            bom.findings.append(f"{where}: not valid YAML ({exc})")
            continue
        if not isinstance(doc, dict):
            bom.findings.append(f"{where}: a bom file must be a mapping")
            continue
        _strict(doc, _BOM_KEYS, where, bom.findings)
        for inc in doc.get("includes") or []:
            cand = [path.parent / inc] + [d / inc for d in dirs]
            found = next((c for c in cand if c.is_file()), None)
            if found is None:
                bom.findings.append(f"{where}: included bom {inc!r} not found")
            else:
                queue.append(found)
        excludes = tuple(str(x) for x in doc.get("excludes") or [])
        for ti, t in enumerate(doc.get("targets") or []):
            tw = f"{where}: targets[{ti}]"
            if not isinstance(t, dict):
                bom.findings.append(f"{tw}: must be a mapping")
                continue
            _strict(t, _TARGET_KEYS, tw, bom.findings)
            target = t.get("target")
            if not isinstance(target, str) or not target.startswith("/"):
                bom.findings.append(f"{tw}: target must be an absolute path inside the image")
                continue
            bom.entries.append(BomEntry("mkdir", posixpath.normpath(target), "", where))
            for d in t.get("mkdirs") or []:
                bom.entries.append(BomEntry("mkdir", posixpath.normpath(posixpath.join(target, str(d))), "", where))
            for li, link in enumerate(t.get("createlinks") or []):
                if not isinstance(link, dict) or set(link) != {"src", "linkname"}:
                    bom.findings.append(f"{tw}.createlinks[{li}]: needs exactly src and linkname")
                    continue
                bom.entries.append(BomEntry("link", posixpath.normpath(posixpath.join(target, link["linkname"])),
                                            str(link["src"]), where))
            for si, src in enumerate(t.get("copy") or []):
                sw = f"{tw}.copy[{si}]"
                if not isinstance(src, dict):
                    bom.findings.append(f"{sw}: must be a mapping")
                    continue
                _strict(src, _SOURCE_KEYS, sw, bom.findings)
                base = src.get("from", "")
                if "files" not in src and "dirs" not in src:
                    if not base:
                        bom.findings.append(f"{sw}: needs from, dirs or files")
                    else:
                        bom.entries.append(BomEntry("contents", posixpath.normpath(target), base, where, excludes))
                for d in src.get("dirs") or []:
                    d = str(d)
                    if "*" in d:
                        bom.findings.append(f"{sw}: wildcard {d!r} (copy_bom does not expand wildcards)")
                    source = posixpath.join(base, d) if base else d
                    if d.endswith("/"):
                        bom.entries.append(BomEntry("contents", posixpath.normpath(target), source, where, excludes))
                    else:
                        img = posixpath.join(target, posixpath.basename(posixpath.normpath(d)))
                        bom.entries.append(BomEntry("dir", posixpath.normpath(img), source, where, excludes))
                for fi, f in enumerate(src.get("files") or []):
                    if isinstance(f, dict):
                        _strict(f, _FILE_KEYS, f"{sw}.files[{fi}]", bom.findings)
                        name, rename = str(f.get("name", "")), f.get("rename")
                    else:
                        name, rename = str(f), None
                    if not name or "*" in name:
                        bom.findings.append(f"{sw}.files[{fi}]: {name!r} is not a file name")
                        continue
                    img = posixpath.join(target, rename or posixpath.basename(name))
                    bom.entries.append(BomEntry("file", posixpath.normpath(img),
                                                posixpath.join(base, name) if base else name, where))
    return bom


def _strict(obj: dict, keys: dict[str, type], where: str, out: list[str]) -> None:
    for k, v in obj.items():
        if k not in keys:
            out.append(f"{where}: unknown key {k!r} (copy_bom would silently ignore it)")
        elif v is not None and not isinstance(v, keys[k]):
            out.append(f"{where}.{k}: must be a {keys[k].__name__}")


def _norm_entry(name: str) -> str:
    """`_x.cpython-311-x86_64-linux-gnu.so` -> `_x.so`: extension names carry the ABI tag."""
    return re.sub(r"\.(cpython|abi3|pypy)[^/]*\.so$", ".so", name)


def check_bom(layout: Layout, appliance: str, closure: Closure, config: dict, where_config: str) -> list[str]:
    """The bom puts into the image what the appliance imports, where its
    Occlum.json (PYTHONHOME, PYTHONPATH, SESEMI_PACK) expects it."""
    a = APPLIANCES[appliance]
    top = layout.bom(appliance)
    bom = load_bom(top, [layout.occ / "bom"])
    where = layout.rel(top)
    out = [f"{where} -> {f}" for f in bom.findings]
    if closure.failed:
        out += [f"{appliance}: module fails to import: {f}" for f in closure.failed]
    env = env_default(config)
    home = env.get("PYTHONHOME", "")
    pypath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    major, minor = closure.version
    stdlib_dir = posixpath.join(home, "lib", f"python{major}.{minor}")
    if not bom.provides(stdlib_dir) or bom.provides(stdlib_dir).kind not in ("dir", "contents"):
        out.append(f"{where}: the standard library {stdlib_dir} (PYTHONHOME of {where_config}) is not copied")
    else:
        for rel, who in sorted(closure.stdlib.items()):
            e = bom.excluded_by(posixpath.join(stdlib_dir, rel))
            if e is not None:
                out.append(f"{where}: {rel} is needed at run time (by {who[0]}) but {e.bom} excludes it")
    for p in pypath:
        e = bom.provides(p)
        if e is None:
            out.append(f"{where}: PYTHONPATH entry {p} is not created by the bom")
    # first-party packages, and nothing of the other appliances
    needed_pkgs = {m.split(".")[0] for m in closure.first_party}
    for pkg in sorted(needed_pkgs):
        hits = [p for p in pypath if (e := bom.provides(posixpath.join(p, pkg))) and e.kind in ("dir", "contents")]
        if not hits:
            out.append(f"{where}: package {pkg} (imported by the {appliance}) is not copied into a PYTHONPATH "
                       f"directory ({', '.join(pypath) or 'none'})")
    for pkg in FIRST_PARTY:
        if pkg in needed_pkgs:
            continue
        for p in pypath:
            if bom.provides(posixpath.join(p, pkg, "__init__.py")):
                out.append(f"{where}: ships {pkg}, which the {appliance} does not use (least code in the enclave)")
    # third-party site-packages entries, compared without ABI tags
    provided = {}
    for e in bom.entries:
        if e.kind in ("dir", "file") and posixpath.dirname(e.image) in pypath:
            provided[_norm_entry(posixpath.basename(e.image))] = e
    for entry, who in sorted(closure.site_entries.items()):
        if _norm_entry(entry) not in provided:
            out.append(f"{where}: {entry} is imported at run time (by {', '.join(sorted(set(who))[:3])}) but no "
                       f"bom copies it into {', '.join(pypath) or 'PYTHONPATH'}")
    needed_norm = {_norm_entry(x) for x in closure.site_entries}
    for name, e in sorted(provided.items()):
        if name not in needed_norm and name not in FIRST_PARTY:
            out.append(f"{e.bom}: copies {name}, which the {appliance} never imports (remove it, or it "
                       f"widens what runs in the enclave)")
    if appliance == "action":
        pack = env.get("SESEMI_PACK", "")
        e = bom.provides(pack)
        if e is None or e.kind != "file":
            out.append(f"{where}: SESEMI_PACK={pack} ({where_config}) is not a file the bom puts in the image")
    return out


# --------------------------------------------------------------------------- Dockerfiles

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)

    def all(self, kind: str) -> list[dict]:
        return [i for i in self.instructions if i["instruction"] == kind]

    def last(self, kind: str) -> dict | None:
        found = self.all(kind)
        return found[-1] if found else None


_KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD", "USER", "LABEL",
          "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "COMMENT"}


def parse_dockerfile(path: Path) -> tuple[list[Stage], list[str]]:
    from dockerfile_parse import DockerfileParser

    where = path.name
    out: list[str] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], [f"{where}: missing"]
    df = DockerfileParser(fileobj=__import__("io").BytesIO(text.encode()))
    stages: list[Stage] = []
    names: set[str] = set()
    for ins in df.structure:
        kind = ins["instruction"]
        if kind not in _KNOWN:
            out.append(f"{where}:{ins['startline'] + 1}: unknown instruction {kind}")
            continue
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            parts = ins["value"].split()
            parts = [p for p in parts if not p.startswith("--platform")]
            if len(parts) == 3 and parts[1].lower() == "as":
                name = parts[2]
            elif len(parts) == 1:
                name = f"stage{len(stages)}"
            else:
                out.append(f"{where}:{ins['startline'] + 1}: cannot parse FROM {ins['value']!r}")
                continue
            if name in names:
                out.append(f"{where}: stage name {name} used twice")
            names.add(name)
            stages.append(Stage(name, parts[0]))
            continue
        if not stages:
            if kind != "ARG":
                out.append(f"{where}:{ins['startline'] + 1}: {kind} before the first FROM")
            continue
        stages[-1].instructions.append(ins)
        if kind in ("ENTRYPOINT", "CMD") and ins["value"].lstrip().startswith("["):
            try:
                json.loads(ins["value"])
            except json.JSONDecodeError:
                out.append(f"{where}:{ins['startline'] + 1}: {kind} is not valid JSON (exec form)")
    seen: set[str] = set()
    for st in stages:
        for ins in st.all("COPY"):
            m = re.search(r"--from=(\S+)", ins["value"])
            if m and m.group(1) not in seen and "/" not in m.group(1) and ":" not in m.group(1):
                out.append(f"{where}:{ins['startline'] + 1}: COPY --from={m.group(1)}: no earlier stage of that name")
        seen.add(st.name)
    return stages, out


def _copy_parts(ins: dict) -> tuple[dict[str, str], list[str], str]:
    flags: dict[str, str] = {}
    value = ins["value"].strip()
    if value.startswith("["):
        args = json.loads(value)
    else:
        args = value.split()
    rest = []
    for a in args:
        if a.startswith("--") and not rest:
            k, _, v = a[2:].partition("=")
            flags[k] = v
        else:
            rest.append(a)
    return flags, rest[:-1], rest[-1] if rest else ""


def _exec_form(ins: dict | None) -> list[str] | None:
    if ins is None:
        return None
    try:
        v = json.loads(ins["value"])
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def _env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', ins["value"]):
            env[m.group(1)] = m.group(2).strip('"')
    return env


def check_dockerfile(layout: Layout, appliance: str, configs: dict[str, dict] | None = None) -> list[str]:
    """`configs`: kind -> Occlum.json the stages run with (default: the templates)."""
    a = APPLIANCES[appliance]
    path = layout.dockerfile(appliance)
    where = layout.rel(path)
    stages, out = parse_dockerfile(path)
    if not stages:
        return out or [f"{where}: no stages"]
    by = {s.name: s for s in stages}
    if configs is None:
        configs = {k: json.loads(layout.template(appliance, k).read_text()) for k in CONFIG_KINDS}
    bom = load_bom(layout.bom(appliance), [layout.occ / "bom"])
    required = ["builder", a.sim_stage, "runtime"] + (["plain"] if appliance == "action" else [])
    for name in required:
        if name not in by:
            out.append(f"{where}: stage {name!r} is missing")
    if stages[-1].name != "runtime":
        out.append(f"{where}: the last stage (what `docker build` makes by default) must be the production "
                   f"`runtime`, not {stages[-1].name!r}")
    builder = by.get("builder")
    if builder is not None:
        if "occlum/occlum" not in builder.base and not _arg_default(path, builder.base).startswith("occlum/occlum:"):
            out.append(f"{where}: the builder stage must start from the occlum/occlum image")
        if not any("build.sh" in r["value"] for r in builder.all("RUN")):
            out.append(f"{where}: the builder stage never runs occlum_instance/build.sh")
    for name, kind in (("runtime", "prod"), (a.sim_stage, "dev")):
        st = by.get(name)
        if st is None:
            continue
        out += _check_occlum_stage(where, st, appliance, configs[kind], bom)
    plain = by.get("plain")
    if plain is not None:
        out += _check_plain_stage(where, plain, appliance)
    return out


def _arg_default(path: Path, ref: str) -> str:
    m = re.fullmatch(r"\$\{?(\w+)\}?", ref)
    if not m:
        return ref
    for line in path.read_text().splitlines():
        mm = re.match(rf"\s*ARG\s+{m.group(1)}=(\S+)", line)
        if mm:
            return mm.group(1)
    return ref


def _check_exposed(where: str, st: Stage, port: int) -> list[str]:
    ports = {p.split("/")[0] for ins in st.all("EXPOSE") for p in ins["value"].split()}
    return [] if str(port) in ports else [f"{where}: stage {st.name} must EXPOSE {port}"]


def _check_occlum_stage(where: str, st: Stage, appliance: str, config: dict, bom: Bom) -> list[str]:
    a = APPLIANCES[appliance]
    out = _check_exposed(where, st, a.port)
    env = env_default(config)
    if env.get("SESEMI_PORT") != str(a.port):
        out.append(f"{where}: stage {st.name} exposes {a.port} but its Occlum.json sets SESEMI_PORT="
                   f"{env.get('SESEMI_PORT')}")
    argv = _exec_form(st.last("ENTRYPOINT"))
    if not argv:
        return out + [f"{where}: stage {st.name} needs an exec-form ENTRYPOINT"]
    if len(argv) < 3 or posixpath.basename(argv[0]) != "occlum" or argv[1] != "run":
        return out + [f"{where}: stage {st.name}: ENTRYPOINT must be `occlum run PROGRAM ...` (one process in the "
                      f"enclave; got {argv})"]
    if not argv[0].startswith("/"):
        out.append(f"{where}: stage {st.name}: give occlum by its absolute path, not {argv[0]!r}")
    elif st.name == "runtime":
        dests = [_copy_parts(i)[2] for i in st.all("COPY") if "from" in _copy_parts(i)[0]]
        if not any(argv[0] == d or argv[0].startswith(d.rstrip("/") + "/") for d in dests):
            out.append(f"{where}: stage runtime runs {argv[0]} but no COPY --from puts it there")
    prog = argv[2]
    eps = config.get("entry_points", [])
    if not any(prog == e or prog.startswith(e.rstrip("/") + "/") for e in eps):
        out.append(f"{where}: stage {st.name}: {prog} is outside Occlum.json entry_points {eps}")
    e = bom.provides(prog)
    if e is None:
        out.append(f"{where}: stage {st.name}: ENTRYPOINT runs {prog}, which the bom does not put in the image")
    elif e.kind == "link" and bom.provides(e.source) is None:
        out.append(f"{where}: stage {st.name}: {prog} links to {e.source}, which the bom does not put in the image")
    if argv[3:5] != ["-m", a.package]:
        out.append(f"{where}: stage {st.name}: ENTRYPOINT must run `-m {a.package}` (got {argv[3:]})")
    workdir = st.last("WORKDIR")
    if workdir is None:
        out.append(f"{where}: stage {st.name}: set WORKDIR to the Occlum instance (occlum run works there)")
    elif st.name == "runtime":
        dests = [_copy_parts(i)[2].rstrip("/") for i in st.all("COPY")]
        if workdir["value"].rstrip("/") not in dests:
            out.append(f"{where}: stage runtime: WORKDIR {workdir['value']} is not the instance it copies")
    return out


def _check_plain_stage(where: str, st: Stage, appliance: str) -> list[str]:
    a = APPLIANCES[appliance]
    out = _check_exposed(where, st, a.port)
    argv = _exec_form(st.last("ENTRYPOINT"))
    if not argv or argv[-2:] != ["-m", a.package] or posixpath.basename(argv[0]) not in ("python3", "python"):
        return out + [f"{where}: stage plain: ENTRYPOINT must be [python3, -m, {a.package}] (got {argv})"]
    env = _env_of(st)
    pypath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    dests = [_copy_parts(i) for i in st.all("COPY")]
    if not any(src == [a.package] and posixpath.dirname(dst.rstrip("/")) in pypath for _, src, dst in dests):
        out.append(f"{where}: stage plain: {a.package} is not copied into a PYTHONPATH directory {pypath}")
    if env.get("SESEMI_PORT", str(a.port)) != str(a.port):
        out.append(f"{where}: stage plain: SESEMI_PORT {env.get('SESEMI_PORT')} != EXPOSE {a.port}")
    user = st.last("USER")
    if user is None or user["value"].split(":")[0] in ("root", "0"):
        out.append(f"{where}: stage plain must not run as root")
    return out


# --------------------------------------------------------------------------- no plaintext models

def _is_model_path(p: str) -> bool:
    p = p.strip().strip('"')
    return p.lower().endswith(MODEL_SUFFIXES) or p.rstrip("/") in ("models", "./models") \
        or p.startswith(("models/", "./models/"))


def check_no_plaintext_models(layout: Layout) -> list[str]:
    out: list[str] = []
    for appliance in APPLIANCES:
        path = layout.dockerfile(appliance)
        where = layout.rel(path)
        stages, _ = parse_dockerfile(path)
        for st in stages:
            for ins in st.all("COPY") + st.all("ADD"):
                flags, srcs, dst = _copy_parts(ins)
                line = ins["startline"] + 1
                if ins["instruction"] == "ADD" and any("://" in s for s in srcs):
                    out.append(f"{where}:{line}: ADD from a URL (unverified content in the image)")
                for s in srcs + [dst]:
                    if _is_model_path(s):
                        out.append(f"{where}:{line}: {ins['instruction']} {s}: a plaintext model in the image")
                packs = [s for s in srcs if "PACK" in s]
                if packs and "from" not in flags and st.name != "builder":
                    out.append(f"{where}:{line}: the pack is copied into stage {st.name}; only the builder may "
                               f"take it, into the encrypted Occlum image")
                if "from" in flags and any(s.startswith("/opt/sesemi/stage") or s.startswith("/opt/sesemi/pack")
                                           for s in srcs):
                    out.append(f"{where}:{line}: copies the staged pack out of the builder, outside the enclave image")
                if st.name == "runtime" and flags.get("from") == "builder":
                    loose = [s for s in srcs if s.rstrip("/").startswith("/opt/sesemi/out")
                             and not s.startswith("/opt/sesemi/out/pkg/")
                             and not s.endswith((".measurement", ".sizing.json"))]
                    if loose:
                        out.append(f"{where}:{line}: the runtime takes {loose} from the builder; only the packaged "
                                   f"instance (/opt/sesemi/out/pkg/...) leaves it (an instance's image/ dir is the "
                                   f"unencrypted file tree)")
            for ins in st.all("VOLUME") + st.all("ENV"):
                if "/opt/sesemi/pack" in ins["value"] and st.name != "builder":
                    out.append(f"{where}:{ins['startline'] + 1}: stage {st.name} exposes the pack path outside "
                               f"the enclave")
        bom = load_bom(layout.bom(appliance), [layout.occ / "bom"])
        for e in bom.entries:
            if e.kind in ("file", "dir") and (_is_model_path(posixpath.basename(e.source)) or
                                              _is_model_path(e.image.lstrip("/").split("/")[-1])):
                out.append(f"{e.bom}: puts a plaintext model ({e.source}) into the image")
        for kind in CONFIG_KINDS:
            try:
                config = json.loads(layout.template(appliance, kind).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            for m in config.get("mount", []):
                if not isinstance(m, dict) or m.get("type") != "hostfs":
                    continue
                if kind == "prod":
                    continue  # reported by check_config_policy
                for e in bom.entries:
                    if e.image == m.get("target") or e.image.startswith(str(m.get("target")).rstrip("/") + "/"):
                        out.append(f"{layout.rel(layout.template(appliance, kind))}: {e.image} from the bom lies "
                                   f"under the hostfs mount {m.get('target')} (plaintext on the host)")
    build_sh = layout.occ / "build.sh"
    try:
        text = build_sh.read_text()
    except FileNotFoundError:
        return out + [f"{layout.rel(build_sh)}: missing"]
    builds = [ln for ln in text.splitlines() if re.search(r"\bocclum\s+build\b", ln) and not ln.lstrip().startswith("#")]
    if not builds:
        out.append(f"{layout.rel(build_sh)}: never runs `occlum build`")
    for ln in builds:
        if "--image-key" not in ln:
            out.append(f"{layout.rel(build_sh)}: `{ln.strip()}` without --image-key leaves the image unencrypted")
    if "SSMIPACK" not in text:
        out.append(f"{layout.rel(build_sh)}: does not check that --pack is a sealed pack (magic SSMIPACK)")
    return out


# --------------------------------------------------------------------------- all

def closures() -> dict[str, Closure]:
    return {name: runtime_closure(a.package) for name, a in APPLIANCES.items()}


def check_all(layout: Layout | None = None, cl: dict[str, Closure] | None = None) -> list[str]:
    layout = layout or Layout()
    cl = cl or closures()
    out = check_templates(layout)
    for appliance in APPLIANCES:
        for kind in CONFIG_KINDS:
            try:
                config = json.loads(layout.template(appliance, kind).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            out += check_bom(layout, appliance, cl[appliance], config, layout.rel(layout.template(appliance, kind)))
        out += check_dockerfile(layout, appliance)
    out += check_no_plaintext_models(layout)
    out += check_code_trusted_settings()
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    findings = check_all(Layout(Path(argv[0]) if argv else REPO))
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s)" if findings else "occlum/image static checks: all passed")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
