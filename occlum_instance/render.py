"""Render an appliance's Occlum.json from its template, the model pack and the settings.

    python occlum_instance/render.py --appliance action --config prod \
        --pack build/main.pack --out occlum_instance_dir/Occlum.json [--sizing-out sizing.json] \
        [--concurrency 8] [--pool-size 2] [--memory-budget-mb 512] [--ks-url URL] ...

What it sets (everything else comes from templates/<appliance>.<prod|dev>.json):

* resource_limits and process sizes: at least sizing.need() for this pack and
  these settings (never below the template's values);
* metadata.product_id / version_number: sesemi.ISV_PROD_ID / sesemi.ISV_SVN;
  env SESEMI_VERSION: sesemi.__version__;
* the env.default entries that the settings decide (pool size, threads,
  memory budget, key TTL, MALLOC_ARENA_MAX; SESEMI_KS_URL / SESEMI_PCCS_URL
  if given: then they are measured into MRENCLAVE like every env.default);
* the key service's SESEMI_BUILD_DATE: the build's date, below which its DCAP
  time floor never goes (sesemi/build_stamp.py).

It imports `sesemi` (to read the pack's manifest and the version) but never
`app` or `keyservice`, so it runs in the builder before those are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `occlum_instance` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from occlum_instance import sizing  # type: ignore[no-redef]
else:
    from . import sizing

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"


def pack_model_sizes(pack_path: str | Path) -> list[int]:
    """Plaintext sizes from the pack's manifest (no key needed). Refuses
    anything that is not a sealed SeSeMI pack, e.g. a plaintext .tflite."""
    from sesemi.pack import Pack

    pack = Pack(pack_path)
    try:
        return [e.plaintext_len for e in pack.entries.values()]
    finally:
        pack.close()


def _set_env(config: dict, name: str, value: str) -> None:
    default = config["env"]["default"]
    entry = f"{name}={value}"
    for i, e in enumerate(default):
        if e.split("=", 1)[0] == name:
            default[i] = entry
            return
    default.append(entry)


def _at_least(current: str, mib: int) -> str:
    return sizing.mib(max(sizing.parse_size(current) >> 20, mib))


def render(appliance: str, kind: str, model_sizes: list[int], settings: sizing.Settings,
           ks_url: str | None = None, pccs_url: str | None = None, ks_key: str | None = None,
           template: Path | None = None, build_date: float | None = None) -> tuple[dict, sizing.Need]:
    """`build_date` (epoch seconds): stamped into the key service's measured
    env.default, never before the code's release date (sesemi/build_stamp.py);
    None: the release date."""
    import sesemi
    from sesemi import build_stamp

    if kind not in ("prod", "dev"):
        raise ValueError("config kind must be prod or dev")
    config = json.loads((template or TEMPLATES / f"{appliance}.{kind}.json").read_text())
    need = sizing.need(appliance, settings, model_sizes)
    rl, proc = config["resource_limits"], config["process"]
    rl["user_space_size"] = _at_least(rl["user_space_size"], need.user_space_mib)
    rl["kernel_space_heap_size"] = _at_least(rl["kernel_space_heap_size"], need.kernel_heap_mib)
    rl["max_num_of_threads"] = max(int(rl["max_num_of_threads"]), need.max_threads)
    proc["default_stack_size"] = sizing.mib(settings.stack_mb)
    proc["default_heap_size"] = sizing.mib(settings.heap_mb)
    config["metadata"]["product_id"] = sesemi.ISV_PROD_ID
    config["metadata"]["version_number"] = sesemi.ISV_SVN
    _set_env(config, "SESEMI_VERSION", sesemi.__version__)
    _set_env(config, "MALLOC_ARENA_MAX", str(settings.malloc_arena_max))
    if appliance == "action":
        _set_env(config, "SESEMI_KEY_TTL", str(settings.key_ttl_s))
        _set_env(config, "SESEMI_POOL_SIZE", str(settings.pool_size))
        _set_env(config, "SESEMI_INTERP_THREADS", str(settings.interp_threads))
        _set_env(config, "SESEMI_MEMORY_BUDGET_MB", str(settings.memory_budget_mb))
        _set_env(config, "SESEMI_THREADS", str(settings.effective_http_threads))
        if ks_url:
            _set_env(config, "SESEMI_KS_URL", ks_url)
        if ks_key:  # the key service's response-signing key: the action trusts only it (measured)
            _set_env(config, "SESEMI_KS_KEY", ks_key)
    else:
        _set_env(config, "SESEMI_THREADS", str(settings.ks_threads))
        _set_env(config, "SESEMI_BUILD_DATE", build_stamp.stamp(max(build_stamp.release_date(), build_date or 0.0)))
        if pccs_url:
            _set_env(config, "SESEMI_PCCS_URL", pccs_url)
    return config, need


def sim_mrenclave(pack_path: str | Path, key_ttl_s: float) -> str:
    """What the action reports with tee=sim (Occlum SIM mode, the dev config):
    the simulated measurement the owner pins instead of a CPU's MRENCLAVE."""
    from sesemi.measure import action_mrenclave, action_trusted_config
    from sesemi.pack import Pack

    pack = Pack(pack_path)
    try:
        return action_mrenclave(action_trusted_config(tee="sim", key_ttl_s=key_ttl_s, insecure_sim_debug=False),
                                pack.manifest_digest)
    finally:
        pack.close()


def _settings_args(p: argparse.ArgumentParser) -> None:
    for f in fields(sizing.Settings):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"sizing setting (default {f.default})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render Occlum.json for a SeSeMI appliance.")
    p.add_argument("--appliance", choices=sizing.APPLIANCES, required=True)
    p.add_argument("--config", choices=("prod", "dev"), required=True,
                   help="prod: HW, not debuggable, tee=occlum; dev: SIM mode, debuggable, tee=sim")
    p.add_argument("--pack", help="the sealed model pack (action)")
    p.add_argument("--out", required=True, help="where to write Occlum.json")
    p.add_argument("--sizing-out", help="also write the sizing arithmetic as JSON here")
    p.add_argument("--ks-url", help="bake the key-service URL into env.default (measured)")
    p.add_argument("--ks-key", help="the key service's signing key (hex, from `sesemi ks attest`); the "
                   "production action refuses to start without it")
    p.add_argument("--pccs-url", help="key service: PCCS for DCAP collateral (measured)")
    p.add_argument("--build-date", help="key service: the build's date, stamped into env.default (measured; "
                   "the DCAP time floor never goes below it). Default: SOURCE_DATE_EPOCH if set (reproducible "
                   "builds), else now")
    p.add_argument("--print-sim-mrenclave", action="store_true",
                   help="print the simulated mrenclave the action reports in SIM mode")
    _settings_args(p)
    args = p.parse_args(argv)
    from sesemi import build_stamp
    from sesemi.errors import FormatError
    settings = sizing.Settings(**{f.name: getattr(args, f.name) for f in fields(sizing.Settings)})
    sizes: list[int] = []
    if args.appliance == "action":
        if not args.pack:
            p.error("--pack is required for the action")
        try:
            sizes = pack_model_sizes(args.pack)
        except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
            print(f"render: {args.pack} is not a sealed SeSeMI model pack: {exc}", file=sys.stderr)
            return 2
    try:
        built = build_stamp.parse(args.build_date) if args.build_date else \
            float(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    except (FormatError, ValueError) as exc:
        print(f"render: --build-date / SOURCE_DATE_EPOCH: {exc}", file=sys.stderr)
        return 2
    config, need = render(args.appliance, args.config, sizes, settings, args.ks_url, args.pccs_url,
                          ks_key=args.ks_key, build_date=built)
    Path(args.out).write_text(json.dumps(config, indent=4) + "\n")
    if args.sizing_out:
        Path(args.sizing_out).write_text(json.dumps({"settings": settings.__dict__, "need": need.as_dict()},
                                                    indent=2) + "\n")
    print(f"{args.appliance} ({args.config}): user_space_size={config['resource_limits']['user_space_size']} "
          f"kernel_space_heap_size={config['resource_limits']['kernel_space_heap_size']} "
          f"max_num_of_threads={config['resource_limits']['max_num_of_threads']} "
          f"-> OpenWhisk memory >= {need.openwhisk_memory_mb} MB", file=sys.stderr)
    if args.print_sim_mrenclave and args.appliance == "action":
        print(sim_mrenclave(args.pack, settings.key_ttl_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
