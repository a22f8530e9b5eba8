"""Security policy on Occlum.json: what must be measured, what the host may set,
production flags, identity."""

from __future__ import annotations

import posixpath
from pathlib import Path

from .layout import (APPLIANCES, HARMLESS_UNTRUSTED, INFORMATIONAL_ENV, PRODUCTION_VALUES, REPO,
                     SECURITY_RELEVANT)
from .occlum_json import env_default

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


def _frozenset_names(tree, name: str) -> set[str] | None:
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return None


def check_code_trusted_settings(root: Path = REPO) -> list[str]:
    """The action's own lists of settings /init may not set (app/config.py:
    TRUSTED_ENV always, TRUSTED_ENV_HW under a hardware TEE) are exactly the
    settings these checks require in the measured env.default. A name measured
    here but accepted from /init would let the platform override, on real
    hardware, what the quote vouches for (docs/protocol.md, "/init")."""
    import ast

    src = root / "app" / "config.py"
    try:
        tree = ast.parse(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ["app/config.py: missing"]
    always = _frozenset_names(tree, "TRUSTED_ENV")
    if always is None:
        return ["app/config.py: no TRUSTED_ENV (the settings /init may not set)"]
    hw = _frozenset_names(tree, "TRUSTED_ENV_HW") or set()
    measured = set(SECURITY_RELEVANT["action"])
    out = [f"app/config.py: trusted setting {n} is not required in the action's env.default "
           f"(SECURITY_RELEVANT in occlum_instance/checks/layout.py)" for n in sorted((always | hw) - measured)]
    out += [f"app/config.py: {n} must come from the measured env.default, yet /init may set it on a hardware TEE "
            f"(add it to TRUSTED_ENV_HW, or TRUSTED_ENV)" for n in sorted(measured - always - hw)]
    return out


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
