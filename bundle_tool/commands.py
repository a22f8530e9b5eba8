"""The owner's and the user's commands. Each returns an `Out` (bundle_tool/output.py)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from typing import Any

import numpy as np

from sesemi import hpke_box, ks_log, sealed_model
from sesemi import timeouts as T
from sesemi.client import ActionClient, KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.errors import FormatError
from sesemi.measure import action_mrenclave, action_trusted_config
from sesemi.names import check_model_id
from sesemi.pack import Pack, build as build_pack
from sesemi.policy import DEFAULT_TCB_STATUSES, EnclavePolicy

from .cli_inputs import check_ks_key, check_url, check_urls, load_inputs
from .home import Home
from .output import Out
from .progress import Bar

SIM_BANNER = "WARNING: INSECURE SIMULATION (tee=sim): evidence is not hardware-backed."


def home_of(args: argparse.Namespace) -> Home:
    return Home(getattr(args, "home", None))


def _timeouts(args: argparse.Namespace, job: T.Timeouts) -> T.Timeouts:
    """The job's defaults, then $SESEMI_CONNECT_TIMEOUT / $SESEMI_READ_TIMEOUT, then the flags."""
    return job.with_env().overridden(getattr(args, "connect_timeout", None), getattr(args, "read_timeout", None))


def _ks(args: argparse.Namespace) -> KeyServiceClient:
    hpke_box.check_backend()  # keys are sealed in hybrid HPKE boxes: one line if ML-KEM is missing
    home = home_of(args)
    return KeyServiceClient(home.pin(), _timeouts(args, T.KEY_SERVICE), counter=home.call_counter(),
                            witness=home.state_witness())


def resolve_ks_key(args: argparse.Namespace) -> str:
    """--ks-key HEX, or 'pinned': the signing key of the key service pinned in this home."""
    if not args.ks_key:
        return ""
    if args.ks_key == "pinned":
        return home_of(args).pin().signing_public_key
    return check_ks_key(args.ks_key)


def cmd_identity_new(args: argparse.Namespace) -> Out:
    pid = home_of(args).new_identity(args.name).principal_id
    return Out({"name": args.name, "principal_id": pid}, pid)


def cmd_identity_show(args: argparse.Namespace) -> Out:
    pid = home_of(args).identity(args.name).principal_id
    return Out({"name": args.name, "principal_id": pid}, pid)


def _dcap_verifier(args: argparse.Namespace) -> Any:
    """A DCAP verifier from --collateral-file / --pccs-url, else from the host's
    /etc/sgx_default_qcnl.conf; None when there is no collateral to be had."""
    from sesemi.attestation.dcap import DcapVerifier, collateral_source, pccs_url_from_qcnl

    source = collateral_source(pccs_url=args.pccs_url or (None if args.collateral_file else pccs_url_from_qcnl()),
                               collateral_file=args.collateral_file)
    return DcapVerifier(source, marks=home_of(args).dcap_marks()) if source is not None else None


def cmd_ks_attest(args: argparse.Namespace) -> Out:
    check_urls(args.url, "key service URL")
    hpke_box.check_backend()
    pin = attest_key_service(args.url, insecure_sim=args.insecure_sim, expect_mrenclave=args.expect_mrenclave,
                             expect_mrsigner=args.expect_mrsigner, dcap_verifier=_dcap_verifier(args),
                             accept_tcb_statuses=args.accept_tcb_status,
                             expect_isv_prod_id=args.expect_isv_prod_id, min_isv_svn=args.min_isv_svn,
                             accept_advisories=args.allow_advisory,
                             timeouts=_timeouts(args, T.KEY_SERVICE))
    home = home_of(args)
    home.save_pin(pin)
    if pin.insecure_simulation:
        print(SIM_BANNER, file=sys.stderr)
    if pin.insecure_allow_classical_kem:
        print("WARNING: this key service runs with --insecure-allow-classical-kem: it releases keys under X25519 "
              "alone to enclaves that ask for it (your own uploads stay hybrid; your policy decides which "
              "enclaves get keys)", file=sys.stderr)
    text = (f"pinned key service {pin.url}\n  tee        {pin.tee}\n  mrenclave  {pin.mrenclave}\n"
            f"  mrsigner   {pin.mrsigner}\n  hpke key   {hpke_box.HYBRID} (post-quantum hybrid), "
            f"id {hpke_box.key_id(bytes.fromhex(pin.hpke_public_key))}"
            + (f"\n  tcb status {pin.tcb_status}" if pin.tcb_status else "")
            + f"\n  signing key {pin.signing_public_key}")
    return Out({**pin.to_json(), "pin_file": str(home.pin_path)}, text)


def cmd_ks_register(args: argparse.Namespace) -> Out:
    pid = _ks(args).register(home_of(args).identity(args.as_))
    return Out({"name": args.as_, "principal_id": pid}, pid)


# Known audit fields first, in this order; any others after them, sorted.
AUDIT_FIELDS = ("leaf", "ts", "event", "outcome", "principal", "model_id", "user_id", "mrenclave", "tee", "reason")


def _iso(ts: Any) -> Any:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError, OSError):
        return ts


def audit_line(entry: dict) -> str:
    keys = [k for k in AUDIT_FIELDS if k in entry] + sorted(k for k in entry if k not in AUDIT_FIELDS)
    return " ".join(f"{k}={_iso(entry[k]) if k == 'ts' else entry[k]}" for k in keys if entry[k] is not None)


def cmd_audit(args: argparse.Namespace) -> Out:
    answer = _ks(args).audit_answer(home_of(args).identity(args.as_), args.model_id, verify=args.verify)
    shown = [{k: v for k, v in e.items() if k not in ("hash", "inclusion_proof")} for e in answer["entries"]]
    lines = [audit_line(e) for e in shown]
    if args.verify:
        lines.append(f"log verified: {len(shown)} entries' inclusion proofs checked against the signed checkpoint "
                     f"(size {answer['head']['size']}, root {answer['head']['root']})")
    return Out(answer, "\n".join(lines))


def cmd_receipt_verify(args: argparse.Namespace) -> Out:
    from sesemi.encoding import json_loads
    from sesemi.ks_log import Receipt

    try:
        raw = open(args.file, "rb").read()
    except OSError as exc:
        raise FormatError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        receipt = Receipt.from_json(json_loads(raw))
    except ValueError:
        raise FormatError(f"{args.file} is not JSON") from None
    key = check_ks_key(args.ks_key) if args.ks_key else home_of(args).pin().signing_public_key
    cp = receipt.verify(bytes.fromhex(key))
    e = receipt.entry
    return Out({"ok": True, "leaf_index": receipt.index, "event": e.get("event"), "model_id": e.get("model_id"),
                "user_id": e.get("user_id"), "checkpoint_size": cp.size, "root": cp.root.hex()},
               f"ok: leaf {receipt.index} ({e.get('event')} {e.get('model_id') or ''} {e.get('user_id') or ''}"
               f"".rstrip() + f") is in the key service's log at checkpoint size {cp.size}")


def cmd_log_checkpoint(args: argparse.Namespace) -> Out:
    cp, note = _ks(args).checkpoint()
    return Out({"size": cp.size, "root": cp.root.hex(), "checkpoint": note}, note.rstrip("\n"))


def cmd_log_prove(args: argparse.Namespace) -> Out:
    ks = _ks(args)
    cp, _ = ks.checkpoint()
    to = cp.size if args.to is None else args.to
    if not 0 <= args.from_ <= to <= cp.size:
        raise FormatError(f"need 0 <= --from <= --to <= {cp.size} (the log's size)")
    proof = ks.consistency_proof(args.from_, to)
    return Out({"first": args.from_, "second": to, "proof": [h.hex() for h in proof]},
               "\n".join(h.hex() for h in proof) or "(empty proof)")


def cmd_log_monitor(args: argparse.Namespace) -> Out:
    """Poll the checkpoint; every answer must prove it extends the last one
    held (the home's witness), so a fork exits non-zero (RollbackDetected)."""
    import time

    if args.count < 1 or not 0 <= args.interval <= 86_400:
        raise FormatError("--count must be at least 1 and --interval from 0 to 86400 seconds")
    ks = _ks(args)
    seen = []
    for i in range(args.count):
        if i:
            time.sleep(args.interval)
        cp, _ = ks.checkpoint()
        seen.append({"size": cp.size, "root": cp.root.hex()})
        if not args.json:
            print(f"checkpoint size {cp.size} root {cp.root.hex()}: consistent", flush=True)
    return Out({"checkpoints": seen, "consistent": True}, f"{len(seen)} checkpoint(s), all consistent")


def cmd_model_seal(args: argparse.Namespace) -> Out:
    from .litert import check_tflite

    home = home_of(args)
    check_model_id(args.model_id)
    check_tflite(args.model)  # before sealing: a sealed file no interpreter loads helps nobody
    key = sealed_model.new_model_key()
    with Bar(f"sealing {args.model_id}", os.path.getsize(args.model)) as bar:
        header = sealed_model.seal_file(args.model, args.out, key, args.model_id, progress=bar)
    home.save_model_key(args.model_id, key, header.seal_id)
    return Out({"model_id": args.model_id, "out": args.out, "plaintext_bytes": header.plaintext_len,
                "sealed_bytes": header.sealed_len, "chunks": header.n_chunks, "key_dir": str(home.root)},
               f"sealed {args.model_id}: {header.plaintext_len} bytes -> {args.out} "
               f"({header.n_chunks} chunk(s)); key kept in {home.root}")


def cmd_model_publish(args: argparse.Namespace) -> Out:
    home = home_of(args)
    policy = EnclavePolicy(mrenclave=tuple(m.lower() for m in args.allow_mrenclave),
                           mrsigner=tuple(m.lower() for m in args.allow_mrsigner),
                           isv_prod_id=args.isv_prod_id, min_isv_svn=args.min_isv_svn,
                           allow_debug=args.insecure_allow_debug,
                           tcb_statuses=tuple(dict.fromkeys((*DEFAULT_TCB_STATUSES, *args.accept_tcb_status))),
                           advisory_allowlist=tuple(args.allow_advisory),
                           advisory_denylist=tuple(args.deny_advisory))
    EnclavePolicy.from_json(policy.to_json())  # same validation the key service applies
    body = _ks(args).publish_model(home.identity(args.as_), args.model_id, home.model_key(args.model_id), policy,
                                   home.model_seal_id(args.model_id))
    receipt = home.save_receipt(ks_log.Receipt.from_json(body["receipt"]))
    return Out({"model_id": args.model_id, "policy": policy.to_json(), "receipt": str(receipt)},
               f"published {args.model_id}")


def cmd_grant(args: argparse.Namespace) -> Out:
    home = home_of(args)
    receipt = home.save_receipt(_ks(args).grant(home.identity(args.as_), args.model_id, args.user_id))
    return Out({"model_id": args.model_id, "user_id": args.user_id, "granted": True, "receipt": str(receipt)},
               f"granted {args.user_id} on {args.model_id}")


def cmd_revoke(args: argparse.Namespace) -> Out:
    home = home_of(args)
    receipt = home.save_receipt(_ks(args).revoke(home.identity(args.as_), args.model_id, args.user_id))
    return Out({"model_id": args.model_id, "user_id": args.user_id, "granted": False, "receipt": str(receipt)},
               f"revoked {args.user_id} on {args.model_id} (actions drop cached keys within their key TTL or the release's request count)")


def cmd_user_enroll(args: argparse.Namespace) -> Out:
    home = home_of(args)
    user = home.identity(args.as_)
    key = new_request_key()
    version, receipt = _ks(args).enroll_with_receipt(user, args.model_id, key)
    home.save_request_key(user.principal_id, args.model_id, key, version)
    path = home.save_receipt(receipt)
    return Out({"model_id": args.model_id, "user_id": user.principal_id, "version": version, "receipt": str(path)},
               f"enrolled a request key for {args.model_id} (version {version}; actions switch to it on its "
               "first use)")


def cmd_user_status(args: argparse.Namespace) -> Out:
    """The user's own standing for a model: what the action's single refusal
    ("not authorised ..., or no request key") does not say."""
    status = _ks(args).user_status(home_of(args).identity(args.as_))
    row = next((m for m in status["models"] if m["model_id"] == args.model_id), None)
    granted, keyed = bool(row and row["granted"]), bool(row and row["request_key"])
    hint = "" if granted and keyed else " (ask the owner for a grant)" if not granted \
        else f" (run: sesemi user enroll {args.model_id})"
    return Out({"model_id": args.model_id, "user_id": status["user_id"], "granted": granted, "request_key": keyed},
               f"{args.model_id}: granted {'yes' if granted else 'no'}, "
               f"request key {'enrolled' if keyed else 'none'}{hint}")


def _sealed_of_plan(args: argparse.Namespace) -> list[str]:
    from sesemi.packplan import pack_of_plan

    from .pack_plan import load_plan

    if args.sealed or not args.pack:
        raise FormatError("with --plan give --pack NAME and no sealed files (the plan names them)")
    plan = load_plan(args.plan)
    pack = pack_of_plan(plan, args.pack)
    models = plan.get("models") or {}
    missing = [m for m in pack["models"] if not isinstance((models.get(m) or {}).get("sealed"), str)]
    if missing:
        raise FormatError(f"the plan has no sealed file for {', '.join(missing[:5])} (give \"sealed\" in the "
                          "models manifest of `sesemi pack plan`)")
    return [models[m]["sealed"] for m in pack["models"]]


def cmd_pack_build(args: argparse.Namespace) -> Out:
    if getattr(args, "plan", None):
        args.sealed = _sealed_of_plan(args)
    elif not args.sealed or getattr(args, "pack", None):
        raise FormatError("give sealed model files, or --plan PLAN.json --pack NAME")
    total = sum(os.path.getsize(p) for p in args.sealed)
    with Bar(f"packing {len(args.sealed)} model(s)", total) as bar:
        entries = build_pack(args.out, args.sealed, progress=bar)
    return Out({"out": args.out, "models": [e.__dict__ for e in entries]},
               f"pack {args.out}: " + ", ".join(e.model_id for e in entries))


def check_key_ttl(ttl: float) -> float:
    if not 0 < ttl <= 3600:  # the action's own bound (app/config.py)
        raise FormatError("--key-ttl must be in (0, 3600] seconds")
    return ttl


def cmd_action_measure(args: argparse.Namespace) -> Out:
    ks_key = resolve_ks_key(args)
    trusted = action_trusted_config(tee="sim", key_ttl_s=check_key_ttl(args.key_ttl), insecure_sim_debug=False,
                                    ks_key=ks_key)
    pack = Pack(args.pack)
    try:
        mr, digest = action_mrenclave(trusted, pack.manifest_digest), pack.manifest_digest
    finally:
        pack.close()
    return Out({"mrenclave": mr, "tee": "sim", "pack": args.pack, "manifest_digest": digest,
                "trusted_config": trusted}, mr)


def cmd_infer(args: argparse.Namespace) -> Out:
    check_url(args.action, "--action")
    inputs = load_inputs(args.input)
    home = home_of(args)
    user = home.identity(args.as_)
    key = home.request_key(user.principal_id, args.model_id)
    version = home.request_key_version(user.principal_id, args.model_id)
    result = ActionClient(args.action, _timeouts(args, T.INFERENCE), path=args.path).infer(
        args.model_id, user.principal_id, key, inputs, key_version=version)
    np.savez(args.out, **result.outputs)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    if result.insecure_simulation:
        print(SIM_BANNER, file=sys.stderr)
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in result.outputs.items())
    return Out({"out": args.out, "model_id": args.model_id, "request_id": result.request_id, "tee": result.tee,
                "insecure_simulation": result.insecure_simulation,
                "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in result.outputs.items()}},
               f"wrote {args.out}: {shapes}")
