"""The `sesemi` command line's parser, one function per command group; the
commands live in bundle_tool/commands.py (owner and user),
bundle_tool/serve_commands.py (servers, demo) and bundle_tool/platform/cli.py
(deploy, emulator, router)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from sesemi import timeouts as T
from sesemi.attestation.backends import TEE_NAMES

from . import commands as c
from . import serve_commands as s
from .pack_plan import add_plan_command


class _Version(argparse.Action):
    """--version, reading the installed distribution only when asked
    (importlib.metadata costs every other command ~20 ms at start)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("sesemi")
        except PackageNotFoundError:  # run from a source tree without installing
            import sesemi

            v = sesemi.__version__
        print(f"sesemi {v}")
        parser.exit()


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or d in (None, False, argparse.SUPPRESS) or d == []
                or "default" in text.lower() or isinstance(action, _Version)):
            return text
        shown = f"{d:g}" if isinstance(d, float) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_global_options(p: argparse.ArgumentParser, top: bool = False, client: bool = True) -> None:
    """--home, --json and the client timeouts, accepted before the command or
    after it. Below the top level their default is SUPPRESS, so a value given
    earlier is not reset. Servers (`client=False`) take --home only: a client
    --read-timeout there would be a silent no-op beside their own limits."""
    default = None if top else argparse.SUPPRESS
    p.add_argument("--home", metavar="DIR", default=default,
                   help="state directory: identities, keys, the key-service pin (default: $SESEMI_HOME or ~/.sesemi)")
    if not client:
        return
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="print the command's data as JSON (commands that print data)")
    p.add_argument("--connect-timeout", type=float, metavar="S", default=default,
                   help=f"seconds to wait for a connection (default: ${T.ENV_CONNECT} or "
                        f"{T.KEY_SERVICE.connect_s:g})")
    p.add_argument("--read-timeout", type=float, metavar="S", default=default,
                   help=f"seconds to wait for an answer (default: ${T.ENV_READ} or {T.KEY_SERVICE.read_s:g} "
                        f"for the key service, {T.INFERENCE.read_s:g} for infer)")


class _Builder:
    """Adds commands to the top-level subparsers with the shared options."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub

    def add(self, parent: Any, name: str, fn: Callable[..., Any], help_: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        sp.set_defaults(fn=fn)
        add_global_options(sp, client=name not in ("serve", "demo"))  # every server's command is `serve`
        return sp

    def group(self, name: str, help_: str) -> Any:
        g = self.sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        add_global_options(g)
        return g.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")

    @staticmethod
    def as_(a: argparse.ArgumentParser, who: str) -> None:
        a.add_argument("--as", dest="as_", required=True, metavar=who,
                       help=f"the identity ({who.lower()}) to act as, by name (see `sesemi identity new`)")

    @staticmethod
    def ks_key(a: argparse.ArgumentParser, extra: str = "") -> None:
        a.add_argument("--ks-key", metavar="HEX|pinned",
                       help="pin the key service: the action accepts only key releases signed by this key "
                            "(measured); 'pinned' = the signing key `sesemi ks attest` pinned in --home" + extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sesemi", description="SeSeMI: secure serverless model inference.",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action=_Version)
    add_global_options(p, top=True)
    b = _Builder(p.add_subparsers(dest="cmd", required=True, metavar="COMMAND"))
    for add_group in (_identity, _key_service_client, _model, _user, _pack, _action, _key_service, _infer_and_demo):
        add_group(b)
    from .platform.cli import add_commands as add_platform_commands  # deploy, platform serve, router serve

    add_platform_commands(b.sub, b.add, b.group)
    return p


def _identity(b: _Builder) -> None:
    ident = b.group("identity", "principal identities (Ed25519)")
    b.add(ident, "new", c.cmd_identity_new, "create an identity and print its principal id").add_argument(
        "name", help="a local name for it (1..64 of [A-Za-z0-9_.-])")
    b.add(ident, "show", c.cmd_identity_show, "print an identity's principal id").add_argument(
        "name", help="the identity's local name")


def _key_service_client(b: _Builder) -> None:
    ks = b.group("ks", "the key service, as a client")
    a = b.add(ks, "attest", c.cmd_ks_attest, "verify the key service's attestation and pin its key")
    a.add_argument("url", help="the key service, e.g. http://127.0.0.1:8443")
    a.add_argument("--insecure-sim", action="store_true", help="accept SIMULATED evidence (development only)")
    a.add_argument("--expect-mrenclave", metavar="HEX", help="refuse unless the key service has this mrenclave")
    a.add_argument("--expect-mrsigner", metavar="HEX", help="refuse unless the key service has this mrsigner "
                   "(needs --expect-isv-prod-id and --min-isv-svn)")
    a.add_argument("--expect-isv-prod-id", type=int, metavar="N",
                   help="refuse unless the key service has this ISV product id")
    a.add_argument("--min-isv-svn", type=int, metavar="N", help="refuse a key service with a lower ISV SVN")
    a.add_argument("--pccs-url", metavar="URL",
                   help="DCAP collateral from this PCCS (default: the one in /etc/sgx_default_qcnl.conf)")
    a.add_argument("--collateral-file", metavar="PATH", help="DCAP collateral from this file (air-gapped)")
    a.add_argument("--accept-tcb-status", action="append", default=[], metavar="STATUS",
                   help="also accept this TCB status besides UpToDate (repeatable), e.g. SWHardeningNeeded")
    a.add_argument("--allow-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="accept a platform affected by this Intel advisory (repeatable); others refuse")
    b.as_(b.add(ks, "register", c.cmd_ks_register, "register an identity with the pinned key service"), "NAME")
    a = b.add(ks, "audit", c.cmd_audit, "show the audit log entries you may see")
    b.as_(a, "NAME")
    a.add_argument("--model-id", metavar="ID", help="only this model's entries (default: all you may see)")
    a.add_argument("--verify", action="store_true", help="check each entry's inclusion proof in the signed "
                   "checkpoint (the operator's full check is `sesemi keyservice verify`)")
    receipt = ks.add_parser("receipt", help="receipts of writes", description="receipts of writes",
                            formatter_class=HelpFormatter).add_subparsers(dest="sub2", required=True,
                                                                           metavar="SUBCOMMAND")
    a = b.add(receipt, "verify", c.cmd_receipt_verify, "check a write's receipt offline: its leaf is in a "
            "checkpoint signed by the pinned key service")
    a.add_argument("file", help="a receipt (written under --home/receipts by publish, grant, revoke, enroll)")
    a.add_argument("--ks-key", metavar="HEX", help="the key service's signing key (default: the pinned one)")
    klog = ks.add_parser("log", help="the key service's verifiable log", description="the key service's "
                         "verifiable log (RFC 9162 Merkle tree, C2SP signed checkpoints)",
                         formatter_class=HelpFormatter).add_subparsers(dest="sub2", required=True,
                                                                        metavar="SUBCOMMAND")
    b.add(klog, "checkpoint", c.cmd_log_checkpoint, "print the current signed checkpoint (proved against the "
        "one this home holds)")
    a = b.add(klog, "prove", c.cmd_log_prove, "print a consistency proof between two tree sizes")
    a.add_argument("--from", dest="from_", type=int, required=True, metavar="N", help="the earlier tree size")
    a.add_argument("--to", type=int, metavar="M", help="the later tree size (default: the current one)")
    a = b.add(klog, "monitor", c.cmd_log_monitor, "poll the checkpoint, each proved against the last; exits "
            "non-zero on a fork or rollback")
    a.add_argument("--interval", type=float, default=10.0, metavar="S", help="seconds between polls")
    a.add_argument("--count", type=int, default=1, metavar="N", help="how many polls (bounded)")


def _model(b: _Builder) -> None:
    """Seal and publish (owner), and grant/revoke."""
    model = b.group("model", "seal and publish models (owner)")
    a = b.add(model, "seal", c.cmd_model_seal, "check that a .tflite model loads, then encrypt it under a fresh "
            "model key (kept in --home)")
    a.add_argument("model", help="the .tflite file")
    a.add_argument("--model-id", required=True, metavar="ID", help="the model's id, bound into the sealed file")
    a.add_argument("--out", required=True, metavar="SEALED", help="where to write the sealed model")
    a = b.add(model, "publish", c.cmd_model_publish, "upload the model key with its enclave policy")
    a.add_argument("model_id", help="a model sealed from this home")
    b.as_(a, "OWNER")
    a.add_argument("--allow-mrenclave", action="append", default=[], metavar="HEX",
                   help="release the key to enclaves with this mrenclave (repeatable; see `action measure`)")
    a.add_argument("--allow-mrsigner", action="append", default=[], metavar="HEX",
                   help="release the key to enclaves signed by this mrsigner (repeatable)")
    a.add_argument("--isv-prod-id", type=int, metavar="N", help="require this ISV product id (default: any)")
    a.add_argument("--min-isv-svn", type=int, default=0, metavar="N", help="require at least this ISV SVN")
    a.add_argument("--insecure-allow-debug", action="store_true",
                   help="also release the key to DEBUG enclaves, whose memory the host can read")
    a.add_argument("--accept-tcb-status", action="append", default=[], metavar="STATUS",
                   help="DCAP: also accept this TCB status besides UpToDate (repeatable)")
    a.add_argument("--allow-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="DCAP: accept platforms affected by this advisory (repeatable); any other refuses")
    a.add_argument("--deny-advisory", action="append", default=[], metavar="INTEL-SA-NNNNN",
                   help="DCAP: refuse platforms affected by this advisory (repeatable; narrows --allow-advisory)")

    for name, fn, verb in (("grant", c.cmd_grant, "grant"), ("revoke", c.cmd_revoke, "revoke")):
        a = b.add(b.sub, name, fn, f"{verb} a user's access to a model (owner)")
        a.add_argument("model_id", help="the model")
        a.add_argument("user_id", help="the user's principal id (what `identity new` printed for them)")
        b.as_(a, "OWNER")


def _user(b: _Builder) -> None:
    user = b.group("user", "model users")
    a = b.add(user, "enroll", c.cmd_user_enroll, "create a request key for a model and register it")
    a.add_argument("model_id", help="the model to enroll for")
    b.as_(a, "USER")
    a = b.add(user, "status", c.cmd_user_status, "your own standing for a model: granted? request key enrolled? "
                                               "(signed; the action answers both refusals alike)")
    a.add_argument("model_id", help="the model")
    b.as_(a, "USER")


def _pack(b: _Builder) -> None:
    pack = b.group("pack", "model packs")
    a = b.add(pack, "build", c.cmd_pack_build, "bundle sealed models into one pack")
    a.add_argument("--out", required=True, metavar="PACK", help="where to write the pack")
    a.add_argument("sealed", nargs="*", help="sealed model files (or --plan and --pack)")
    a.add_argument("--plan", metavar="PLAN.json", help="a plan from `sesemi pack plan`: its pack's sealed files")
    a.add_argument("--pack", metavar="NAME", help="with --plan: which of its packs")
    add_plan_command(pack, b.add)


def _action(b: _Builder) -> None:
    action = b.group("action", "the inference action")
    a = b.add(action, "measure", c.cmd_action_measure, "print the mrenclave the action will report (sim)")
    a.add_argument("--pack", required=True, metavar="PACK", help="the pack the action will serve")
    a.add_argument("--key-ttl", type=float, default=60.0, metavar="S",
                   help="the key TTL the action will run with (it is measured)")
    b.ks_key(a, " (default: unpinned)")
    a = b.add(action, "serve", s.cmd_action_serve, "serve the OpenWhisk /init and /run protocol")
    a.add_argument("--port", type=int, default=8080, metavar="N", help="port to listen on")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a.add_argument("--pack", metavar="PACK", help="the model pack (default: $SESEMI_PACK or /init's)")
    a.add_argument("--ks", metavar="URL", help="the key service (default: $SESEMI_KS_URL or /init's)")
    a.add_argument("--threads", type=int, default=64, metavar="N",
                   help="max concurrent connections, a thread each")
    a.add_argument("--pool-size", type=int, metavar="N", help="interpreters per model (default: one per core)")
    a.add_argument("--key-ttl", type=float, metavar="S",
                   help="seconds a released key is cached (measured; default: $SESEMI_KEY_TTL or 60)")
    a.add_argument("--init", action="store_true", help="initialise at start-up instead of waiting for /init")
    b.ks_key(a, " (required with --tee occlum; default: $SESEMI_KS_KEY, else unpinned)")
    a.add_argument("--tee", choices=TEE_NAMES, help="evidence backend (default: $SESEMI_TEE or sim)")


def _key_service(b: _Builder) -> None:
    kss = b.group("keyservice", "run the key service")
    a = b.add(kss, "verify", s.cmd_keyservice_verify, "the operator's full check of a key-service database: every "
            "log leaf, node and sealed row (its own process: no lock a serving replica needs)")
    a.add_argument("--db", required=True, metavar="PATH|postgresql://...", help="the database to check")
    a.add_argument("--secrets", metavar="PATH", help="the service identity's file (default: next to a SQLite "
                   "database)")
    a = b.add(kss, "serve", s.cmd_keyservice_serve, "serve the key service")
    a.add_argument("--db", required=True, metavar="PATH|postgresql://...",
                   help="its SQLite database (created if missing), or a PostgreSQL URL for several replicas")
    a.add_argument("--secrets", metavar="PATH", help="the service identity's file (default: next to a SQLite "
                   "database; required with PostgreSQL)")
    a.add_argument("--join", metavar="URL", help="receive the service identity from the running replica at URL "
                   "by attestation")
    a.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="another replica: state versions are exchanged, and a database behind a peer is refused")
    a.add_argument("--cluster-policy", metavar="POLICY.json",
                   help="the enclave policy a joining replica must meet (default: this replica's mrenclave; "
                   "measured)")
    a.add_argument("--port", type=int, default=8443, metavar="N", help="port to listen on")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on")
    a.add_argument("--threads", type=int, default=8, metavar="N", help="request threads")
    a.add_argument("--token-ttl", type=int, default=600, metavar="S", help="enclave attestation token lifetime (s)")
    a.add_argument("--insecure-sim-attestation", action="store_true",
                   help="release keys to enclaves presenting SIMULATED evidence (development only)")
    a.add_argument("--insecure-allow-classical-kem", action="store_true",
                   help="accept X25519-only HPKE keys and boxes (uploads, releases) beside the hybrid post-quantum "
                   "ones: no protection against recorded traffic decrypted later (migration only; measured)")
    a.add_argument("--tee", choices=TEE_NAMES, default="sim",
                   help="how the service attests itself: sim, or occlum (inside an Occlum enclave)")
    a.add_argument("--pccs-url", metavar="URL", help="DCAP collateral for enclaves' quotes from this PCCS "
                   "(default: the one in /etc/sgx_default_qcnl.conf)")
    a.add_argument("--collateral-file", metavar="PATH", help="DCAP collateral from this file (air-gapped)")
    a.add_argument("--min-tcb-eval", type=int, default=0, metavar="N",
                   help="refuse DCAP collateral whose tcbEvaluationDataNumber is below N")
    a.add_argument("--release-max-requests", type=s.positive_int, default=10_000, metavar="N",
                   help="stated in every key release: an action serves at most N requests with a released "
                   "key before fetching it again, whatever its clock says (measured; default 10000)")
    a.add_argument("--max-connections", type=s.positive_int, default=400, metavar="N",
                   help="open connections in total; beyond, the longest-idle one is closed")
    a.add_argument("--connections-per-address", type=s.positive_int, default=32, metavar="N",
                   help="open connections per client address, same rule")
    a.add_argument("--read-timeout-s", type=s.positive_seconds, default=10.0, metavar="S",
                   help="a request's header and body must arrive within this")
    a.add_argument("--idle-timeout-s", type=s.positive_seconds, default=15.0, metavar="S",
                   help="a kept-alive connection may idle this long")


def _infer_and_demo(b: _Builder) -> None:
    a = b.add(b.sub, "infer", c.cmd_infer, "encrypt an input, run it on an action, decrypt the outputs")
    a.add_argument("model_id", help="the model")
    a.add_argument("--action", required=True, metavar="URL", help="the action (or router, or platform) to post to")
    a.add_argument("--path", default="/run", help="path to post to")
    b.as_(a, "USER")
    a.add_argument("--input", required=True, metavar="X.npy|X.npz",
                   help="the input: one array (.npy), or one array per input tensor by name (.npz)")
    a.add_argument("--out", required=True, metavar="Y.npz", help="where to write the outputs, one array each")

    a = b.add(b.sub, "demo", s.cmd_demo, "run the whole flow locally (sim) on the digits model")
    a.add_argument("--workdir", metavar="DIR", help="keep state here (default: a temporary directory)")
    a.add_argument("--batch", type=int, default=30, metavar="N", help="digits per request")
    a.add_argument("--platform", action="store_true",
                   help="go through the local OpenWhisk emulator and the router instead of one action")
