"""`sesemi deploy`, `sesemi platform serve`, `sesemi router serve|front`. Each server
command imports its server lazily, so the rest of the CLI does not load
gunicorn."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from sesemi.encoding import JSONDecodeError, json_loads
from sesemi.errors import FormatError
from sesemi.openwhisk import DEFAULT_ACTION_THREADS, ActionSpec, OpenWhiskClient, load_credentials

from ..output import Out

AUTH_ENV = "SESEMI_PLATFORM_AUTH"


def _pairs(items: list[str], what: str, parse_json: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FormatError(f"{what} takes KEY=VALUE, got {item.split('=', 1)[0]!r}")
        if parse_json:  # as `wsk -p`: a value that is valid JSON is passed structured
            try:
                out[key] = json_loads(value)
                continue
            except JSONDecodeError:
                pass
        out[key] = value
    return out


def _apply_plan(args: argparse.Namespace) -> None:
    """`--plan FILE --pack NAME`: the pack's action names, pool size, memory
    limit and LRU budget as the plan wrote them; the rest from the flags."""
    if not args.plan:
        if args.pack or not args.names:
            raise FormatError("give action NAME(s), or --plan PLAN.json --pack NAME")
        args.memory = 256 if args.memory is None else args.memory
        args.replicas = 1 if args.replicas is None else args.replicas
        return
    from sesemi.packplan import action_names, pack_of_plan

    from ..pack_plan import load_plan

    if not args.pack or args.names or args.memory is not None or args.replicas is not None:
        raise FormatError("--plan takes --pack NAME; the names, --memory and --replicas come from the plan")
    plan = load_plan(args.plan)
    pack = pack_of_plan(plan, args.pack)
    args.names, args.replicas, args.memory = action_names(pack), 1, pack["memory_mb"]
    if any(e.startswith("SESEMI_MEMORY_BUDGET_MB=") for e in args.env):
        raise FormatError("--plan sets SESEMI_MEMORY_BUDGET_MB (the pack's LRU budget)")
    args.env = [*args.env, f"SESEMI_MEMORY_BUDGET_MB={pack['budget_mb']}"]
    if args.concurrency is None:
        args.concurrency = int((plan.get("platform") or {}).get("concurrency", 1))


def action_specs(args: argparse.Namespace) -> list[ActionSpec]:
    _apply_plan(args)
    if args.concurrency is None:
        args.concurrency = 1
    if args.replicas < 1:
        raise FormatError("--replicas must be at least 1")
    names = [f"{n}-{i}" for n in args.names for i in range(1, args.replicas + 1)] if args.replicas > 1 \
        else list(args.names)
    env = _pairs(args.env, "--env")
    params = _pairs(args.param, "--param", parse_json=True)
    ann = _pairs(args.annotation, "--annotation", parse_json=True)
    if args.image_threads < 1:
        raise FormatError("--image-threads must be at least 1")
    if args.concurrency > args.image_threads:
        # The invoker opens up to limits.concurrency connections per container;
        # the action serves at most SESEMI_THREADS at once.
        raise FormatError(f"--concurrency {args.concurrency} exceeds the image's {args.image_threads} connection "
                          "threads (SESEMI_THREADS in the image; pass --image-threads if it sets another)")
    return [ActionSpec(n, args.image, args.memory, args.timeout, args.concurrency, env, params, ann).validate()
            for n in names]


def cmd_deploy(args: argparse.Namespace) -> Out:
    specs = action_specs(args)
    creds = load_credentials(args.wskprops, apihost=args.apihost, namespace=args.namespace,
                             require_auth=not args.dry_run)
    if args.insecure:
        print("sesemi: warning: INSECURE: -i/--insecure: the API host's TLS certificate is not verified",
              file=sys.stderr)
    client = OpenWhiskClient(creds, insecure=args.insecure, cacert=args.cacert)
    if args.dry_run:
        plans = [client.plan_put_action(spec) for spec in specs]
        return Out({"requests": [{"method": r.method, "url": r.url, "body": r.body} for r in plans]},
                   "\n".join(r.describe() for r in plans).rstrip("\n"))
    done, lines = [], []
    for spec in specs:
        doc = client.put_action(spec)
        env = ", ".join(sorted(spec.init_env)) or "none"
        done.append({"name": spec.name, "version": doc.get("version"), "apihost": creds.apihost,
                     "image": spec.image, "memory_mb": spec.memory_mb, "timeout_ms": spec.timeout_ms,
                     "concurrency": spec.concurrency, "init_env": sorted(spec.init_env)})
        lines.append(f"deployed {spec.name} (version {doc.get('version', '?')}) at {creds.apihost}: image "
                     f"{spec.image}, {spec.memory_mb} MB, timeout {spec.timeout_ms} ms, concurrency "
                     f"{spec.concurrency}; init env: {env}")
    return Out({"deployed": done}, "\n".join(lines))


def write_wskprops(path: Path, apihost: str, auth: str, namespace: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"APIHOST={apihost}\nAUTH={auth}\nNAMESPACE={namespace}\n")


def cmd_platform_serve(args: argparse.Namespace) -> None:
    from . import ImageMap, Settings, serve

    images = ImageMap.parse(args.image)
    auth = os.environ.get(AUTH_ENV, "")
    if auth and ":" not in auth:
        raise FormatError(f"${AUTH_ENV} must be user:password")
    if not auth:
        if not args.wskprops:
            raise FormatError(f"give --wskprops PATH to receive generated credentials, or set ${AUTH_ENV}")
        auth = f"{secrets.token_hex(8)}:{secrets.token_urlsafe(24)}"
    apihost = f"http://{args.host}:{args.port}"
    if args.wskprops:
        write_wskprops(Path(args.wskprops), apihost, auth, args.namespace)
        print(f"credentials in {args.wskprops} (use: export WSK_CONFIG_FILE={args.wskprops})", flush=True)
    settings = Settings(namespace=args.namespace, keep_alive_s=args.keep_alive, max_containers=args.max_containers,
                        max_wait_s=args.max_wait, blocking_wait_s=args.blocking_wait,
                        start_timeout_s=args.start_timeout, max_payload_bytes=int(args.max_payload_mb * (1 << 20)),
                        work_dir=Path(args.work_dir or tempfile.mkdtemp(prefix="sesemi-platform-")),
                        api_host=apihost, api_key=auth, max_memory_mb=args.max_memory,
                        max_timeout_ms=args.max_timeout, max_concurrency=args.max_concurrency)
    if settings.keep_alive_s <= 0 or settings.max_containers < 1 or settings.max_wait_s < 0:
        raise FormatError("--keep-alive must be > 0, --max-containers >= 1, --max-wait >= 0")
    if not (settings.max_memory_mb >= 128 and settings.max_timeout_ms >= 100 and 1 <= settings.max_concurrency <= 500):
        raise FormatError("--max-memory must be >= 128, --max-timeout >= 100, --max-concurrency in [1, 500]")
    serve(settings, images, auth, host=args.host, port=args.port, threads=args.threads)


def cmd_router_serve(args: argparse.Namespace) -> None:
    import router

    router.serve(args.config, host=args.host, port=args.port, threads=args.threads)


def cmd_router_front(args: argparse.Namespace) -> None:
    import router

    if args.workers < 1 or args.threads < 1:
        raise FormatError("--workers and --threads must be at least 1")
    router.serve_front(args.config, host=args.host, port=args.port, threads=args.threads, workers=args.workers)


def add_commands(sub: Any, add: Callable[..., argparse.ArgumentParser], group: Callable[..., Any]) -> None:
    a = add(sub, "deploy", cmd_deploy, "create or update blackbox actions through OpenWhisk's REST API")
    a.add_argument("names", nargs="*", metavar="NAME", help="action name(s) (or --plan and --pack)")
    a.add_argument("--plan", metavar="PLAN.json",
                   help="a plan from `sesemi pack plan`: its pack's actions, memory limit and LRU budget")
    a.add_argument("--pack", metavar="NAME", help="with --plan: which of its packs")
    a.add_argument("--image", required=True, metavar="IMAGE",
                   help="the action's Docker image (the emulator maps it to a command)")
    a.add_argument("--memory", type=int, metavar="MB", help="memory limit (default 256)")
    a.add_argument("--timeout", type=int, default=60_000, metavar="MS", help="time limit (default 60000)")
    a.add_argument("--concurrency", type=int, metavar="N",
                   help="activations one container runs at once (default 1; with --plan, the plan's)")
    a.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="init parameter: reaches the container in /init's value.env (e.g. SESEMI_KS_URL)")
    a.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="default parameter (repeatable; a JSON value is passed structured)")
    a.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="annotation (repeatable; a JSON value is passed structured)")
    a.add_argument("--image-threads", type=int, default=DEFAULT_ACTION_THREADS, metavar="N",
                   help="connection threads the image serves (its SESEMI_THREADS): the concurrency "
                        "may not exceed it")
    a.add_argument("--replicas", type=int, metavar="N",
                   help="deploy NAME-1 .. NAME-N (a router pool) instead of NAME")
    a.add_argument("--wskprops", metavar="PATH",
                   help="OpenWhisk properties file (default: $WSK_CONFIG_FILE or ~/.wskprops)")
    a.add_argument("--apihost", metavar="URL", help="override APIHOST (default: the properties file's)")
    a.add_argument("--namespace", help="override NAMESPACE (default: the properties file's, else _)")
    a.add_argument("-i", "--insecure", "--insecure-skip-tls-verify", dest="insecure", action="store_true",
                   help="do not verify the API host's TLS certificate (as `wsk -i`; say so on stderr)")
    a.add_argument("--cacert", metavar="FILE",
                   help="trust this CA certificate (PEM) for the API host, e.g. a self-signed deployment's")
    a.add_argument("--dry-run", action="store_true", help="print the requests instead of sending them")

    plat = group("platform", "the local OpenWhisk emulator")
    a = add(plat, "serve", cmd_platform_serve, "serve OpenWhisk's REST API subset; containers are local processes")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a.add_argument("--port", type=int, default=3233, metavar="N", help="port to listen on")
    a.add_argument("--namespace", default="guest", help="the one namespace it serves")
    a.add_argument("--wskprops", metavar="PATH", help="write APIHOST/AUTH/NAMESPACE here (mode 0600)")
    a.add_argument("--keep-alive", type=float, default=600.0, metavar="S",
                   help="remove a container idle this long (OpenWhisk's default: 600)")
    a.add_argument("--max-containers", type=int, default=8, metavar="N", help="containers at most (default 8)")
    a.add_argument("--max-wait", type=float, default=60.0, metavar="S",
                   help="an activation waits this long for a container at the cap, then 429 (default 60)")
    a.add_argument("--blocking-wait", type=float, default=60.0, metavar="S",
                   help="a blocking invoke answers 202 with the id after this long (default 60)")
    a.add_argument("--start-timeout", type=float, default=60.0, metavar="S",
                   help="a container must listen within this long (default 60)")
    a.add_argument("--max-payload-mb", type=float, default=1.0, metavar="MB",
                   help="invocation payload limit (OpenWhisk's default: 1 MB)")
    a.add_argument("--max-memory", type=int, default=512, metavar="MB",
                   help="largest limits.memory in MB, as OpenWhisk's whisk.memory.max (stock: 512)")
    a.add_argument("--max-timeout", type=int, default=300_000, metavar="MS",
                   help="largest limits.timeout in ms, as OpenWhisk's time limit max (stock: 300000)")
    a.add_argument("--max-concurrency", type=int, default=1, metavar="N",
                   help="largest limits.concurrency, as OpenWhisk's concurrency limit max (stock: 1)")
    a.add_argument("--image", action="append", default=[], metavar="NAME=COMMAND",
                   help="map an image to a local command ({port} and $PORT give its port); "
                        "built in: sesemi-action")
    a.add_argument("--work-dir", metavar="DIR", help="container logs (default: a temporary directory)")
    a.add_argument("--threads", type=int, default=64, metavar="N", help="request threads")

    rt = group("router", "the model packer's router (FnPacker)")
    a = add(rt, "serve", cmd_router_serve, "route each model's requests to its pack's pool of actions")
    a.add_argument("--config", required=True, metavar="FILE", help="packs, actions, policy (JSON or YAML)")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a.add_argument("--port", type=int, default=8000, metavar="N", help="port to listen on")
    a.add_argument("--threads", type=int, default=64, metavar="N", help="request threads")
    a = add(rt, "front", cmd_router_front, "one URL in front of several routers: forward by model id")
    a.add_argument("--config", required=True, metavar="FILE",
                   help="the routers: url and config file of each (JSON or YAML); see docs/packing.md")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a.add_argument("--port", type=int, default=8080, metavar="N", help="port to listen on")
    a.add_argument("--threads", type=int, default=64, metavar="N", help="request threads per worker")
    a.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes (the front end is stateless; default 1)")
