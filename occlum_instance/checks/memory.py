"""Memory and thread limits against the sizing rule (occlum_instance/sizing.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

from .. import sizing
from .layout import APPLIANCES, CONFIG_KINDS, DEMO_MODEL, Layout
from .occlum_json import check_config_schema, env_default
from .policy import check_config_policy, check_env_names_read, check_identity


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
    out += _tcs_findings(config, getattr(need, "app_threads", None), getattr(need, "tcs_reserve", 0), where)
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


def _tcs_findings(config: dict, app_threads: int | None, reserve: int, where: str) -> list[str]:
    """max_num_of_threads must leave a TCS for the PAL. Without EDMM,
    tools/gen_internal_conf/src/main.rs sets TCSNum = TCSMaxNum =
    max_num_of_threads; each LibOS thread holds a TCS while it runs
    (src/pal/src/ocalls/spawn.c), and the PAL's interrupt thread, which enters
    every 25 ms, exits the process if its ECall fails
    (src/pal/src/pal_interrupt_thread.c)."""
    if app_threads is None:
        return [f"{where}: the sizing rule does not count the appliance's own threads apart from the PAL's TCS "
                f"reserve (sizing.Need.app_threads), so the reserve cannot be checked"]
    if reserve < 1:
        return [f"{where}: the sizing rule reserves no TCS for the PAL's interrupt thread "
                f"(sizing.PAL_TCS_RESERVE must be >= 1)"]
    have = config.get("resource_limits", {}).get("max_num_of_threads")
    if not isinstance(have, int) or have < app_threads + reserve:
        return [f"{where}: max_num_of_threads {have} leaves no TCS for the PAL: the appliance runs up to "
                f"{app_threads} threads and the interrupt thread needs {reserve} more"]
    return []


def _sizing_of(layout: Layout) -> ModuleType | None:
    """The layout's own sizing.py (not the one imported here), so the check
    judges the files it is given."""
    path = layout.occ / "sizing.py"
    if not path.is_file():
        return None
    name = f"_sizing_under_check_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)  # stdlib only, by its own contract
    finally:
        sys.modules.pop(name, None)
    return mod


def check_tcs_reserve(layout: Layout) -> list[str]:
    """The sizing rule reserves a TCS for the PAL, and every template honours it."""
    mod = _sizing_of(layout)
    where_rule = layout.rel(layout.occ / "sizing.py")
    if mod is None:
        return [f"{where_rule}: missing"]
    reserve = int(getattr(mod, "PAL_TCS_RESERVE", 0) or 0)
    if reserve < 1:
        return [f"{where_rule}: reserves no TCS for the PAL's interrupt thread (PAL_TCS_RESERVE >= 1; "
                f"src/pal/src/pal_interrupt_thread.c exits the process when every TCS is in use)"]
    out: list[str] = []
    for appliance in APPLIANCES:
        need = mod.need(appliance, mod.Settings(), [DEMO_MODEL.stat().st_size] if appliance == "action" else [])
        for kind in CONFIG_KINDS:
            path = layout.template(appliance, kind)
            try:
                config = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # reported by check_templates
            out += _tcs_findings(config, getattr(need, "app_threads", None), reserve, layout.rel(path))
    return out
