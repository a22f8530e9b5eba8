"""Memory and thread limits against the sizing rule (occlum_instance/sizing.py)."""

from __future__ import annotations

import json

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
