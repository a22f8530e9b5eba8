"""Simulated measurements (mrenclave) for the `sim` backend.

In SGX the CPU measures the enclave; in sim we hash what would be measured:
the code files, the trusted configuration and, for the action, the pack
manifest. This is only as trustworthy as the process computing it (i.e. not
at all against a malicious host); it exists so policies behave as they will
with real measurements: change the code, the trusted config or the pack and
the key service stops releasing keys.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Iterable

from .encoding import canonical_json, lp


def package_dir(name: str) -> Path:
    """Locate a top-level package without importing it (sesemi must not import app)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def code_digest(packages: Iterable[str]) -> bytes:
    h = hashlib.sha256()
    for pkg in sorted(packages):
        root = package_dir(pkg)
        for f in sorted(root.rglob("*.py")):
            rel = f"{pkg}/{f.relative_to(root).as_posix()}"
            h.update(lp(rel, f.read_bytes()))
    return h.digest()


def action_trusted_config(*, tee: str, key_ttl_s: float, insecure_sim_debug: bool,
                          ks_key: str = "") -> dict[str, Any]:
    """The action settings that change what it protects; one rule for the
    action (which reports it) and the CLI (which predicts it for owners)."""
    from . import ISV_SVN, __version__

    return {"version": __version__, "isv_svn": ISV_SVN, "tee": tee, "key_ttl_s": float(key_ttl_s),
            "insecure_sim_debug": bool(insecure_sim_debug), **({"ks_key": ks_key.lower()} if ks_key else {})}


def action_mrenclave(trusted_config: dict[str, Any], pack_manifest_digest: str) -> str:
    return hashlib.sha256(lp(
        "sesemi/sim-mrenclave/action/v1",
        code_digest(["sesemi", "app"]),
        canonical_json(trusted_config),
        pack_manifest_digest,
    )).hexdigest()


def keyservice_mrenclave(trusted_config: dict[str, Any]) -> str:
    return hashlib.sha256(lp(
        "sesemi/sim-mrenclave/keyservice/v1",
        code_digest(["sesemi", "keyservice"]),
        canonical_json(trusted_config),
    )).hexdigest()
