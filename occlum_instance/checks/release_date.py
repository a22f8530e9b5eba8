"""The release's date keeps up with the code: the DCAP time floor is never
below it (sesemi/build_stamp.py), so a seed left behind lets a host that sets
the clock back revive collateral that expired since. A finding when the seed
in the code (RELEASE_DATE) or in a key-service template's measured env.default
(SESEMI_BUILD_DATE) is older than the newest commit by more than
MAX_LAG_DAYS, or missing."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

from .layout import CONFIG_KINDS, REPO, Layout
from .occlum_json import env_default


def newest_commit_time(root: Path) -> float | None:
    """The committer time of HEAD; None outside a git checkout (an unpacked copy)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%ct"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return float(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def _code_constants(root: Path) -> dict[str, object]:
    tree = ast.parse((root / "sesemi" / "build_stamp.py").read_text(encoding="utf-8"))
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)}


def check_release_date(layout: Layout, commit_time: float | None = None) -> list[str]:
    from sesemi import build_stamp
    from sesemi.errors import FormatError

    root = layout.root if (layout.root / "sesemi" / "build_stamp.py").is_file() else REPO
    try:
        consts = _code_constants(root)
        lag_days = int(consts["MAX_LAG_DAYS"])  # type: ignore[call-overload]
        seeds = {"sesemi/build_stamp.py RELEASE_DATE": consts.get("RELEASE_DATE")}
    except (OSError, SyntaxError, KeyError, TypeError, ValueError):
        return ["sesemi/build_stamp.py: no RELEASE_DATE / MAX_LAG_DAYS to check"]
    for kind in CONFIG_KINDS:
        path = layout.template("keyservice", kind)
        try:
            env = env_default(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # check_templates reports it
        seeds[f"{layout.rel(path)} SESEMI_BUILD_DATE"] = env.get("SESEMI_BUILD_DATE")
    if commit_time is None:
        commit_time = newest_commit_time(layout.root) or newest_commit_time(REPO)
    out = []
    for where, seed in seeds.items():
        if not isinstance(seed, str):
            out.append(f"{where}: missing (the DCAP time floor's release date)")
            continue
        try:
            at = build_stamp.parse(seed)
        except FormatError as exc:
            out.append(f"{where}: {exc}")
            continue
        if commit_time is not None and commit_time - at > lag_days * 86400:
            out.append(f"{where}: {seed} is {int((commit_time - at) // 86400)} days older than the newest commit "
                       f"(at most {lag_days}): move the release date forward (docs/attestation.md, \"Time\")")
    return out
