"""The `sesemi` command line. Every failure is one clear line on stderr and a
non-zero exit; no tracebacks for user errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sesemi import sealed_model
from sesemi.attestation.backends import TEE_NAMES
from sesemi.client import ActionClient, KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.errors import FormatError, SesemiError
from sesemi.measure import action_mrenclave, action_trusted_config
from sesemi.pack import Pack, build as build_pack
from sesemi.policy import DEFAULT_TCB_STATUSES, EnclavePolicy
from sesemi import timeouts as T

from .home import Home

SIM_BANNER = "WARNING: INSECURE SIMULATION (tee=sim): evidence is not hardware-backed."


def _home(args: argparse.Namespace) -> Home:
    return Home(args.home)


def _timeouts(args: argparse.Namespace, job: T.Timeouts) -> T.Timeouts:
    """The job's defaults, then $SESEMI_CONNECT_TIMEOUT / $SESEMI_READ_TIMEOUT, then the flags."""
    return job.with_env().overridden(args.connect_timeout, args.read_timeout)


def _ks(args: argparse.Namespace) -> KeyServiceClient:
    home = _home(args)
    return KeyServiceClient(home.pin(), _timeouts(args, T.KEY_SERVICE), counter=home.call_counter())


def cmd_identity_new(args: argparse.Namespace) -> None:
    print(_home(args).new_identity(args.name).principal_id)


def cmd_identity_show(args: argparse.Namespace) -> None:
    print(_home(args).identity(args.name).principal_id)


def _dcap_verifier(args: argparse.Namespace):
    """A DCAP verifier from --collateral-file / --pccs-url, else from the host's
    /etc/sgx_default_qcnl.conf; None when there is no collateral to be had."""
    from sesemi.attestation.dcap import DcapVerifier, collateral_source, pccs_url_from_qcnl

    source = collateral_source(pccs_url=args.pccs_url or (None if args.collateral_file else pccs_url_from_qcnl()),
                               collateral_file=args.collateral_file)
    return DcapVerifier(source) if source is not None else None


def cmd_ks_attest(args: argparse.Namespace) -> None:
    pin = attest_key_service(args.url, insecure_sim=args.insecure_sim, expect_mrenclave=args.expect_mrenclave,
                             expect_mrsigner=args.expect_mrsigner, dcap_verifier=_dcap_verifier(args),
                             accept_tcb_statuses=args.accept_tcb_status,
                             expect_isv_prod_id=args.expect_isv_prod_id, min_isv_svn=args.min_isv_svn,
                             accept_advisories=args.allow_advisory,
                             timeouts=_timeouts(args, T.KEY_SERVICE))
    _home(args).save_pin(pin)
    if pin.insecure_simulation:
        print(SIM_BANNER, file=sys.stderr)
    print(f"pinned key service {pin.url}\n  tee        {pin.tee}\n  mrenclave  {pin.mrenclave}\n"
          f"  mrsigner   {pin.mrsigner}\n  hpke key   {pin.hpke_public_key}"
          + (f"\n  tcb status {pin.tcb_status}" if pin.tcb_status else "")
          + f"\n  signing key {pin.signing_public_key}")


def cmd_ks_register(args: argparse.Namespace) -> None:
    print(_ks(args).register(_home(args).identity(args.as_)))


def cmd_model_seal(args: argparse.Namespace) -> None:
    home = _home(args)
    key = sealed_model.new_model_key()
    header = sealed_model.seal_file(args.model, args.out, key, args.model_id)
    home.save_model_key(args.model_id, key, header.seal_id)
    print(f"sealed {args.model_id}: {header.plaintext_len} bytes -> {args.out} "
          f"({header.n_chunks} chunk(s)); key kept in {home.root}")


def cmd_model_publish(args: argparse.Namespace) -> None:
    home = _home(args)
    policy = EnclavePolicy(mrenclave=tuple(m.lower() for m in args.allow_mrenclave),
                           mrsigner=tuple(m.lower() for m in args.allow_mrsigner),
                           isv_prod_id=args.isv_prod_id, min_isv_svn=args.min_isv_svn,
                           allow_debug=args.insecure_allow_debug,
                           tcb_statuses=tuple(dict.fromkeys((*DEFAULT_TCB_STATUSES, *args.accept_tcb_status))),
                           advisory_allowlist=tuple(args.allow_advisory),
                           advisory_denylist=tuple(args.deny_advisory))
    EnclavePolicy.from_json(policy.to_json())  # same validation the key service applies
    _ks(args).publish_model(home.identity(args.as_), args.model_id, home.model_key(args.model_id), policy,
                            home.model_seal_id(args.model_id))
    print(f"published {args.model_id}")


def cmd_grant(args: argparse.Namespace) -> None:
    _ks(args).grant(_home(args).identity(args.as_), args.model_id, args.user_id)
    print(f"granted {args.user_id} on {args.model_id}")


def cmd_revoke(args: argparse.Namespace) -> None:
    _ks(args).revoke(_home(args).identity(args.as_), args.model_id, args.user_id)
    print(f"revoked {args.user_id} on {args.model_id} (actions drop cached keys within their key TTL)")


def cmd_user_enroll(args: argparse.Namespace) -> None:
    home = _home(args)
    user = home.identity(args.as_)
    key = new_request_key()
    _ks(args).enroll(user, args.model_id, key)
    home.save_request_key(user.principal_id, args.model_id, key)
    print(f"enrolled a request key for {args.model_id}")


def cmd_audit(args: argparse.Namespace) -> None:
    for e in _ks(args).audit(_home(args).identity(args.as_), args.model_id):
        print(" ".join(f"{k}={e[k]}" for k in ("seq", "event", "outcome", "model_id", "user_id", "reason")
                       if e.get(k) is not None))


def cmd_pack_build(args: argparse.Namespace) -> None:
    entries = build_pack(args.out, args.sealed)
    print(f"pack {args.out}: " + ", ".join(e.model_id for e in entries))


def cmd_action_measure(args: argparse.Namespace) -> None:
    ks_key = _home(args).pin().signing_public_key if args.ks_key == "pinned" else (args.ks_key or "")
    trusted = action_trusted_config(tee="sim", key_ttl_s=args.key_ttl, insecure_sim_debug=False, ks_key=ks_key)
    pack = Pack(args.pack)
    print(action_mrenclave(trusted, pack.manifest_digest))
    pack.close()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError("expected an integer in 1..100000")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected a number of seconds in (0, 3600]")
    return value


def cmd_keyservice_serve(args: argparse.Namespace) -> None:
    import keyservice
    from keyservice.serving import ServingLimits

    limits = ServingLimits(max_connections=args.max_connections, per_address=args.connections_per_address,
                           read_timeout_s=args.read_timeout_s, idle_timeout_s=args.idle_timeout_s)
    keyservice.serve(Path(args.db), insecure_sim_attestation=args.insecure_sim_attestation,
                     token_ttl_s=args.token_ttl, host=args.host, port=args.port, threads=args.threads,
                     tee=args.tee, pccs_url=args.pccs_url, collateral_file=args.collateral_file,
                     min_tcb_eval=args.min_tcb_eval, limits=limits)


def cmd_action_serve(args: argparse.Namespace) -> None:
    import app

    settings = {k: str(v) for k, v in {
        "SESEMI_PACK": args.pack, "SESEMI_KS_URL": args.ks, "SESEMI_KEY_TTL": args.key_ttl, "SESEMI_TEE": args.tee,
        "SESEMI_KS_KEY": args.ks_key,
        "SESEMI_POOL_SIZE": args.pool_size}.items() if v is not None}
    app.serve(settings, host=args.host, port=args.port, threads=args.threads, init_now=args.init)


def _load_inputs(path: str) -> dict[str, np.ndarray]:
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return {"input_0": np.load(path, allow_pickle=False)}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read input {path}: {type(exc).__name__}") from None


def cmd_infer(args: argparse.Namespace) -> None:
    home = _home(args)
    user = home.identity(args.as_)
    key = home.request_key(user.principal_id, args.model_id)
    result = ActionClient(args.action, _timeouts(args, T.INFERENCE), path=args.path).infer(args.model_id, user.principal_id, key,
                                                             _load_inputs(args.input))
    np.savez(args.out, **result.outputs)
    if result.insecure_simulation:
        print(SIM_BANNER, file=sys.stderr)
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in result.outputs.items())
    print(f"wrote {args.out}: {shapes}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(workdir=args.workdir, batch=args.batch, platform=args.platform)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sesemi", description="SeSeMI: secure serverless model inference.")
    p.add_argument("--home", help="state directory (default: $SESEMI_HOME or ~/.sesemi)")
    p.add_argument("--connect-timeout", type=float, metavar="S",
                   help=f"seconds to wait for a connection (default ${T.ENV_CONNECT} or "
                        f"{T.KEY_SERVICE.connect_s:g})")
    p.add_argument("--read-timeout", type=float, metavar="S",
                   help=f"seconds to wait for an answer (default ${T.ENV_READ} or {T.KEY_SERVICE.read_s:g} "
                        f"for the key service, {T.INFERENCE.read_s:g} for infer)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(parent, name: str, fn: Callable, help_: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    def group(name: str, help_: str):
        g = sub.add_parser(name, help=help_, description=help_)
        return g.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")

    ident = group("identity", "principal identities (Ed25519)")
    add(ident, "new", cmd_identity_new, "create an identity and print its principal id").add_argument("name")
    add(ident, "show", cmd_identity_show, "print an identity's principal id").add_argument("name")

    ks = group("ks", "the key service, as a client")
    a = add(ks, "attest", cmd_ks_attest, "verify the key service's attestation and pin its key")
    a.add_argument("url")
    a.add_argument("--insecure-sim", action="store_true", help="accept SIMULATED evidence (development only)")
    a.add_argument("--expect-mrenclave", help="refuse unless the key service has this mrenclave")
    a.add_argument("--expect-mrsigner", help="refuse unless the key service has this mrsigner "
                   "(needs --expect-isv-prod-id and --min-isv-svn)")
    a.add_argument("--expect-isv-prod-id", type=int, metavar="N", help="refuse unless the key service has this ISV product id")
    a.add_argument("--min-isv-svn", type=int, metavar="N", help="refuse a key service with a lower ISV SVN")
    a.add_argument("--pccs-url", help="DCAP collateral from this PCCS (default: /etc/sgx_default_qcnl.conf)")
    a.add_argument("--collateral-file", metavar="PATH", help="DCAP collateral from this file (air-gapped)")
    a.add_argument("--accept-tcb-status", action="append", default=[], metavar="STATUS",
                   help="also accept this TCB status besides UpToDate (repeatable), e.g. SWHardeningNeeded")
    a.add_argument("--allow-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="accept a platform affected by this Intel advisory (repeatable); others refuse")
    add(ks, "register", cmd_ks_register, "register an identity with the pinned key service").add_argument(
        "--as", dest="as_", required=True, metavar="NAME")
    a = add(ks, "audit", cmd_audit, "show the audit log entries you may see")
    a.add_argument("--as", dest="as_", required=True, metavar="NAME")
    a.add_argument("--model-id")

    model = group("model", "seal and publish models (owner)")
    a = add(model, "seal", cmd_model_seal, "encrypt a .tflite model under a fresh model key")
    a.add_argument("model")
    a.add_argument("--model-id", required=True)
    a.add_argument("--out", required=True)
    a = add(model, "publish", cmd_model_publish, "upload the model key with its enclave policy")
    a.add_argument("model_id")
    a.add_argument("--as", dest="as_", required=True, metavar="OWNER")
    a.add_argument("--allow-mrenclave", action="append", default=[], metavar="HEX")
    a.add_argument("--allow-mrsigner", action="append", default=[], metavar="HEX")
    a.add_argument("--isv-prod-id", type=int)
    a.add_argument("--min-isv-svn", type=int, default=0)
    a.add_argument("--insecure-allow-debug", action="store_true",
                   help="also release the key to DEBUG enclaves, whose memory the host can read")
    a.add_argument("--accept-tcb-status", action="append", default=[], metavar="STATUS",
                   help="DCAP: also accept this TCB status besides UpToDate (repeatable)")
    a.add_argument("--allow-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="DCAP: accept platforms affected by this advisory (repeatable); any other refuses")
    a.add_argument("--deny-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="DCAP: refuse platforms affected by this advisory (repeatable; narrows --allow-advisory)")

    for name, fn, verb in (("grant", cmd_grant, "grant"), ("revoke", cmd_revoke, "revoke")):
        a = add(sub, name, fn, f"{verb} a user's access to a model (owner)")
        a.add_argument("model_id")
        a.add_argument("user_id")
        a.add_argument("--as", dest="as_", required=True, metavar="OWNER")

    user = group("user", "model users")
    a = add(user, "enroll", cmd_user_enroll, "create a request key for a model and register it")
    a.add_argument("model_id")
    a.add_argument("--as", dest="as_", required=True, metavar="USER")

    pack = group("pack", "model packs")
    a = add(pack, "build", cmd_pack_build, "bundle sealed models into one pack")
    a.add_argument("--out", required=True)
    a.add_argument("sealed", nargs="+")

    action = group("action", "the inference action")
    a = add(action, "measure", cmd_action_measure, "print the mrenclave the action will report (sim)")
    a.add_argument("--pack", required=True)
    a.add_argument("--key-ttl", type=float, default=60.0,
                   help="the key TTL the action will run with (it is measured; default 60)")
    a.add_argument("--ks-key", metavar="HEX|pinned",
                   help="the key-service signing key the action will pin (measured); 'pinned' = the one "
                        "`sesemi ks attest` pinned here")
    a = add(action, "serve", cmd_action_serve, "serve the OpenWhisk /init and /run protocol")
    a.add_argument("--port", type=int, default=8080)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--pack")
    a.add_argument("--ks", metavar="URL")
    a.add_argument("--threads", type=int, default=64,
                   help="max concurrent connections, a thread each (default 64)")
    a.add_argument("--pool-size", type=int, help="interpreters per model (default: one per core)")
    a.add_argument("--key-ttl", type=float, help="seconds a released key is cached (measured)")
    a.add_argument("--init", action="store_true", help="initialise at start-up instead of waiting for /init")
    a.add_argument("--ks-key", metavar="HEX", help="pin the key service: accept only key releases signed by "
                   "this key (measured; required with --tee occlum)")
    a.add_argument("--tee", choices=TEE_NAMES, help="evidence backend (default: $SESEMI_TEE or sim)")

    kss = group("keyservice", "run the key service")
    a = add(kss, "serve", cmd_keyservice_serve, "serve the key service")
    a.add_argument("--db", required=True)
    a.add_argument("--port", type=int, default=8443)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--threads", type=int, default=8)
    a.add_argument("--token-ttl", type=int, default=600, help="enclave attestation token lifetime (s)")
    a.add_argument("--insecure-sim-attestation", action="store_true",
                   help="release keys to enclaves presenting SIMULATED evidence (development only)")
    a.add_argument("--tee", choices=TEE_NAMES, default="sim",
                   help="how the service attests itself: sim, or occlum (inside an Occlum enclave)")
    a.add_argument("--pccs-url", help="DCAP collateral for enclaves' quotes from this PCCS "
                   "(default: /etc/sgx_default_qcnl.conf)")
    a.add_argument("--collateral-file", metavar="PATH", help="DCAP collateral from this file (air-gapped)")
    a.add_argument("--min-tcb-eval", type=int, default=0, metavar="N",
                   help="refuse DCAP collateral whose tcbEvaluationDataNumber is below N")
    a.add_argument("--max-connections", type=_positive_int, default=400,
                   help="open connections in total; beyond, the longest-idle one is closed (default 400)")
    a.add_argument("--connections-per-address", type=_positive_int, default=32,
                   help="open connections per client address, same rule (default 32)")
    a.add_argument("--read-timeout-s", type=_positive_float, default=10.0,
                   help="a request's header and body must arrive within this (default 10)")
    a.add_argument("--idle-timeout-s", type=_positive_float, default=15.0,
                   help="a kept-alive connection may idle this long (default 15)")

    a = add(sub, "infer", cmd_infer, "encrypt an input, run it on an action, decrypt the outputs")
    a.add_argument("model_id")
    a.add_argument("--action", required=True, metavar="URL")
    a.add_argument("--path", default="/run", help="path to post to (default /run)")
    a.add_argument("--as", dest="as_", required=True, metavar="USER")
    a.add_argument("--input", required=True, metavar="X.npy|X.npz")
    a.add_argument("--out", required=True, metavar="Y.npz")

    a = add(sub, "demo", cmd_demo, "run the whole flow locally (sim) on the digits model")
    a.add_argument("--workdir", help="keep state here (default: a temporary directory)")
    a.add_argument("--batch", type=int, default=30)
    a.add_argument("--platform", action="store_true",
                   help="go through the local OpenWhisk emulator and the router instead of one action")

    from .platform.cli import add_commands as add_platform_commands  # deploy, platform serve, router serve

    add_platform_commands(sub, add, group)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SesemiError as exc:
        print(f"sesemi: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, FormatError) else 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"sesemi: error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}", file=sys.stderr)
        return 1
    return 0
