"""A local serverless deployment for the demo, the tests and the benchmarks:
the OpenWhisk emulator as a process, action pools deployed through the REST
API (the same client `sesemi deploy` uses), the router as a process, and the
front end before several routers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sesemi.openwhisk import ActionSpec, OpenWhiskClient, load_credentials

from .processes import Server, free_port, start

ACTION_IMAGE = "sesemi-action"


def start_emulator(work: Path, *, keep_alive_s: float = 600.0, max_containers: int = 8,
                   extra: Sequence[str] = (), name: str = "platform", max_concurrency: int = 64,
                   max_memory_mb: int = 2048) -> tuple[Server, Path]:
    """The emulator and the wskprops file with its generated credentials. Its
    limits are raised from a stock deployment's (concurrency 1, 512 MB), as a
    deployment serving SeSeMI configures them (docs/deploy.md)."""
    port = free_port()
    home = work / name
    wskprops = home / "wskprops"
    args = ["platform", "serve", "--port", str(port), "--wskprops", str(wskprops), "--keep-alive", str(keep_alive_s),
            "--max-containers", str(max_containers), "--work-dir", str(home),
            "--max-concurrency", str(max_concurrency), "--max-memory", str(max_memory_mb), *extra]
    return start(name, args, port, work / "logs", "/ping"), wskprops


def client_for(wskprops: Path) -> OpenWhiskClient:
    return OpenWhiskClient(load_credentials(wskprops))


def deploy_pool(wskprops: Path, prefix: str, n: int, env: Mapping[str, str], *, image: str = ACTION_IMAGE,
                concurrency: int = 4, memory_mb: int = 512, timeout_ms: int = 60_000) -> list[str]:
    """Actions PREFIX-1 .. PREFIX-N of one image, the router's pool for one pack."""
    client = client_for(wskprops)
    names = [f"{prefix}-{i}" for i in range(1, n + 1)]
    for name in names:
        client.put_action(ActionSpec(name, image, memory_mb, timeout_ms, concurrency, dict(env)))
    return names


def write_router_config(path: Path, wskprops: Path, packs: Mapping[str, tuple[Sequence[str], Sequence[str]]],
                        policy: Mapping[str, Any] | None = None, **settings: Any) -> Path:
    doc = {"openwhisk": {"wskprops": str(wskprops)},
           "packs": [{"name": name, "models": list(models), "actions": list(actions)}
                     for name, (models, actions) in packs.items()],
           "policy": dict(policy or {}), **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def start_router(work: Path, config: Path, name: str = "router", port: int | None = None) -> Server:
    port = port or free_port()
    return start(name, ["router", "serve", "--config", str(config), "--port", str(port)], port, work / "logs",
                 "/healthz")


def write_front_config(path: Path, routers: Mapping[str, tuple[str, Path]], **settings: Any) -> Path:
    """`routers` maps a router's name to (its URL, its config file)."""
    doc = {"routers": [{"name": name, "url": url, "config": str(cfg)} for name, (url, cfg) in routers.items()],
           **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def start_front(work: Path, config: Path, name: str = "front", extra: Sequence[str] = (),
                port: int | None = None) -> Server:
    port = port or free_port()
    return start(name, ["router", "front", "--config", str(config), "--port", str(port), *extra], port,
                 work / "logs", "/healthz")


@dataclass
class LocalPlatform:
    emulator: Server
    wskprops: Path
    router: Server
    pools: dict[str, list[str]] = field(default_factory=dict)
    path: str = "/v1/infer"

    @property
    def url(self) -> str:
        return self.router.url

    @property
    def servers(self) -> list[Server]:
        return [self.emulator, self.router]


def start_platform(work: Path, ks_url: str, packs: Mapping[str, tuple[Path, Sequence[str]]], *,
                   actions_per_pack: int = 2, concurrency: int = 4, keep_alive_s: float = 600.0,
                   max_containers: int = 8, policy: Mapping[str, Any] | None = None,
                   router_settings: Mapping[str, Any] | None = None) -> LocalPlatform:
    """Emulator + one pool of `actions_per_pack` actions per pack + router.
    `packs` maps a pack name to (pack file, the model ids in it)."""
    emulator, wskprops = start_emulator(work, keep_alive_s=keep_alive_s, max_containers=max_containers)
    router = None
    try:
        pools = {name: deploy_pool(wskprops, f"sesemi-{name}", actions_per_pack,
                                   {"SESEMI_PACK": str(pack), "SESEMI_KS_URL": ks_url}, concurrency=concurrency)
                 for name, (pack, _) in packs.items()}
        config = write_router_config(work / "router.json", wskprops,
                                     {name: (models, pools[name]) for name, (_, models) in packs.items()},
                                     {"share_limit": concurrency, **(policy or {})}, **(router_settings or {}))
        router = start_router(work, config)
    except BaseException:
        emulator.stop()
        raise
    return LocalPlatform(emulator, wskprops, router, pools)
