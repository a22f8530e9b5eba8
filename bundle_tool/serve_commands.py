"""The commands that run something until stopped: the key service, an action,
the demo. Servers are imported lazily, so the client commands do not load them."""

from __future__ import annotations

import argparse
import os
import errno
from pathlib import Path
from typing import Any

from sesemi.errors import FormatError, UnavailableError

from .cli_inputs import check_urls
from .commands import check_key_ttl, resolve_ks_key


def _bounded(text: str, kind: type, top: float, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not 0 < value <= top:
        raise argparse.ArgumentTypeError(f"expected {what}")
    return value


def positive_int(text: str) -> int:
    return int(_bounded(text, int, 100_000, "an integer in 1..100000"))


def positive_seconds(text: str) -> float:
    return float(_bounded(text, float, 3600, "a number of seconds in (0, 3600]"))


def cmd_keyservice_serve(args: argparse.Namespace) -> None:
    import keyservice

    limits = keyservice.ServingLimits(max_connections=args.max_connections, per_address=args.connections_per_address,
                                      read_timeout_s=args.read_timeout_s, idle_timeout_s=args.idle_timeout_s)
    policy = None
    if args.cluster_policy:
        from sesemi.encoding import canonical_json, json_loads
        from sesemi.policy import EnclavePolicy

        try:
            raw = Path(args.cluster_policy).read_bytes()
        except OSError as exc:
            raise FormatError(f"--cluster-policy: cannot read {args.cluster_policy} ({type(exc).__name__})") \
                from None
        policy = canonical_json(EnclavePolicy.from_json(json_loads(raw)).to_json()).decode()
    from sesemi import build_stamp

    config = keyservice.KeyServiceConfig.for_database(
        args.db, insecure_sim_attestation=args.insecure_sim_attestation, token_ttl_s=args.token_ttl, tee=args.tee,
        pccs_url=args.pccs_url, collateral_file=Path(args.collateral_file) if args.collateral_file else None,
        min_tcb_eval=args.min_tcb_eval, secrets_file=Path(args.secrets) if args.secrets else None,
        peers=tuple(args.peer), cluster_policy=policy, release_max_requests=args.release_max_requests,
        insecure_allow_classical_kem=args.insecure_allow_classical_kem,
        # the image's stamp (measured env.default), never before the code's release date
        build_date=build_stamp.build_date(os.environ))
    keyservice.serve(config, host=args.host, port=args.port, threads=args.threads, join_url=args.join,
                     limits=limits)


def cmd_keyservice_verify(args: argparse.Namespace) -> Any:
    import keyservice

    from .output import Out

    got = keyservice.verify_database(args.db, args.secrets)
    return Out(got, f"ok: log of {got['tree_size']} leaves (root {got['root']}) and {got['rows']} sealed rows verify")


def cmd_action_serve(args: argparse.Namespace) -> None:
    import app

    if args.ks:
        check_urls(args.ks, "--ks")
    if args.key_ttl is not None:
        check_key_ttl(args.key_ttl)
    settings = {k: str(v) for k, v in {
        "SESEMI_PACK": args.pack, "SESEMI_KS_URL": args.ks, "SESEMI_KEY_TTL": args.key_ttl, "SESEMI_TEE": args.tee,
        "SESEMI_KS_KEY": resolve_ks_key(args) or None,
        "SESEMI_POOL_SIZE": args.pool_size}.items() if v is not None}
    try:
        app.serve(settings, host=args.host, port=args.port, threads=args.threads, init_now=args.init)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) or exc.filename:
            raise
        raise UnavailableError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(workdir=args.workdir, batch=args.batch, platform=args.platform)
