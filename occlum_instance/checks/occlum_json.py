"""Occlum.json's schema: the fields, types and size syntax Occlum's config
generator (tools/gen_internal_conf/src/main.rs) and the LibOS's own config
parser (src/libos/src/config.rs) accept."""

from __future__ import annotations

import re
from typing import Any

from .. import sizing

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
    # default_mmap_size is obsolete in the LibOS (src/libos/src/vm/mod.rs: the user
    # space is one pool; misc/rlimit.rs only reports it in RLIMIT_AS), but 0.30.1's
    # OcclumProcess in gen_internal_conf has no default for it, so it stays required.
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
                 "family_id": dict, "ext_prod_id": dict}, {"disable_log": bool}, out)
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
    # OcclumFeature in tools/gen_internal_conf/src/main.rs (0.30.1): it re-serializes
    # only these four, so any other key (io_uring, say) is dropped without a word.
    _check_keys(f"{where}.feature", feat, {},
                {"amx": int, "pkru": int, "enable_edmm": bool, "enable_posix_shm": bool}, out)
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
                out.append(f"{where}.mount: the root's upper layer must be a writable (sealed, no MAC) SEFS")
        for m in mounts:
            # gen_internal_conf's app stage already mounts procfs on /proc and devfs on
            # /dev and appends the user's mounts after them: a second one is a double mount.
            if isinstance(m, dict) and m.get("target") in _BUILTIN_MOUNTS:
                out.append(f"{where}.mount: {m.get('target')} is already mounted by Occlum "
                           f"(tools/gen_internal_conf adds {_BUILTIN_MOUNTS[m.get('target')]}); remove it")
        targets = [m.get("target") for m in mounts if isinstance(m, dict)]
        dups = {t for t in targets if targets.count(t) > 1}
        if dups:
            out.append(f"{where}.mount: target(s) mounted twice: {sorted(dups)}")
    return out


# ALL_FS_TYPES in src/libos/src/config.rs (0.30.1).
_MOUNT_TYPES = {"sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs"}
# The mounts tools/gen_internal_conf/src/main.rs puts in the app stage itself.
_BUILTIN_MOUNTS = {"/proc": "procfs", "/dev": "devfs"}


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
        # OcclumMountOptions in tools/gen_internal_conf/src/main.rs (0.30.1) keeps only
        # these; anything else never reaches the LibOS.
        _check_keys(f"{where}.options", opts, {},
                    {"MAC": str, "layers": list, "temporary": bool, "cache_size": str}, out)
        for lyr_i, lyr in enumerate(opts.get("layers") or []):
            out += _check_mount(lyr, f"{where}.options.layers[{lyr_i}]")
    return out
