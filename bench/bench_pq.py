"""Post-quantum key transport: hybrid MLKEM768-X25519 HPKE against X25519
alone, each ratio from variants interleaved in one run.

- HPKE alone, in-process: key generation, seal, open.
- One key release round trip over HTTP (nonce-free: the token is reused), the
  release answer's two boxes opened, as an enclave does; and releases per
  second from one client. Both arms talk to one key service, started with
  --insecure-allow-classical-kem so that the X25519 arm is served at all: the
  arms differ in the enclave's key (1,216 against 32 bytes) and so in the boxes.
- Cold start of the action (process start, /init with attestation, first /run
  with key release), the hybrid action against bench/classical_action.py.
- Sizes of every box and of the evidence, both suites.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cold import retried, sesemi_cold  # noqa: E402
from bench.common import MODELS, cpu_s, interleaved, parse_args, progress, summary_ms, write_result  # noqa: E402
from bundle_tool.local import LocalWorld  # noqa: E402
from sesemi import hpke_box  # noqa: E402
from sesemi.attestation.claims import report_data_binding  # noqa: E402
from sesemi.attestation.sim import SimBackend  # noqa: E402
from sesemi.client import EnclaveKeyClient  # noqa: E402
from sesemi.encoding import b64d, b64e, json_dumps  # noqa: E402

H, C = hpke_box.HYBRID, hpke_box.CLASSICAL
HERE = Path(__file__).resolve().parent


def hpke_micro(n: int) -> dict:
    keys = {k: hpke_box.new_private_key(k) for k in (H, C)}
    boxes = {k: hpke_box.seal(b"k" * 32, keys[k].public, b"i", allow_classical=True) for k in (H, C)}
    variants = {}
    for k in (H, C):
        variants[f"keygen_{k}"] = lambda k=k: hpke_box.new_private_key(k)
        variants[f"seal_{k}"] = lambda k=k: hpke_box.seal(b"k" * 32, keys[k].public, b"i", allow_classical=True)
        variants[f"open_{k}"] = lambda k=k: hpke_box.open_(boxes[k], keys[k], b"i", allow_classical=True)
    t = interleaved(variants, n)
    return {name: statistics.median(v) * 1e6 for name, v in t.items()}  # µs


def sizes(world: LocalWorld, mr: str) -> dict:
    """Bytes of every box (raw, and base64 as sent) and of the evidence bodies."""
    from keyservice.cluster import seal_secrets
    from keyservice.sealing import ServiceSecrets

    out: dict = {}
    c = EnclaveKeyClient(world.ks_server.url)
    uid = world.user.principal_id
    ks_pub = bytes.fromhex(world.ks.pin.hpke_public_key)
    for k in (H, C):
        enclave = hpke_box.new_private_key(k)
        to_ks = ks_pub if k == H else ks_pub[-32:]
        upload = hpke_box.seal(b"k" * 32, to_ks, hpke_box.info("model-key", "m", uid, "00" * 16), allow_classical=True)
        nonce = c.nonce()
        evidence = SimBackend(mr).evidence(report_data_binding(nonce, enclave.public))
        attest_body = json_dumps({"nonce": nonce.hex(), "evidence": evidence, "public_key": b64e(enclave.public)})
        token = c.attest(nonce, evidence, enclave.public)[0]
        rel = c.keys(token, "digits", uid, True, seal_id=world.seal_ids["digits"])
        tmp = ServiceSecrets(b"s" * 32, hpke_box.new_private_key().raw, b"g" * 32)
        join = b64d(seal_secrets(tmp, enclave.public, tmp.hpke_public)) if k == H else None
        out[k] = {"public_key": len(enclave.public), "private_key": len(enclave.raw),
                  "owner_or_user_upload_box": len(upload), "release_model_key_box": len(b64d(rel["model_key"])),
                  "release_request_key_box": len(b64d(rel["request_key"])),
                  "replica_join_secrets_box": len(join) if join else None,
                  "enclave_attest_request_json": len(attest_body),
                  "release_answer_json": len(json_dumps(rel))}
    att = c.http.call("GET", f"/v1/attestation?nonce={'00' * 32}", "attestation")[0]
    out["key_service_attestation_json"] = {H: len(json_dumps(att)),
                                           C: len(json_dumps({**att, "hpke_public_key": b64e(ks_pub[-32:])}))}
    return out


def releases(world: LocalWorld, mr: str, n: int, seconds: float, rounds: int) -> dict:
    url, uid, seal = world.ks_server.url, world.user.principal_id, world.seal_ids["digits"]
    calls = {}
    for k in (H, C):
        c = EnclaveKeyClient(url)
        key = hpke_box.new_private_key(k)
        nonce = c.nonce()
        token = c.attest(nonce, SimBackend(mr).evidence(report_data_binding(nonce, key.public)), key.public)[0]

        def once(c=c, key=key, token=token):
            r = c.keys(token, "digits", uid, True, seal_id=seal)
            hpke_box.open_(b64d(r["model_key"]), key, hpke_box.info("release-model-key", "digits", seal),
                           allow_classical=True)
            hpke_box.open_(b64d(r["request_key"]), key, hpke_box.info(
                "release-request-key", "digits", uid, str(r["request_key_version"])), allow_classical=True)
        calls[k] = once
    rt = interleaved(calls, n)
    per_s: dict[str, list[float]] = {H: [], C: []}
    # The key service's own CPU per release, summed over the blocks: what its capacity
    # (releases/s with enough clients) goes by, and far less noisy than a shared machine's wall time.
    pid = world.ks_server.proc.pid
    cpu = {H: 0.0, C: 0.0}
    done = {H: 0, C: 0}
    for i in range(rounds):  # alternating short blocks, the order flipped each round: the shared
        # machine's speed drifts within seconds, so each round's pair is compared
        for k in ((H, C) if i % 2 == 0 else (C, H)):
            stop, count = time.perf_counter() + seconds, 0
            t0, c0 = time.perf_counter(), cpu_s(pid)
            while time.perf_counter() < stop:
                calls[k]()
                count += 1
            per_s[k].append(count / (time.perf_counter() - t0))
            cpu[k] += cpu_s(pid) - c0
            done[k] += count
    cpu_ms = {k: cpu[k] / max(1, done[k]) * 1e3 for k in cpu}
    return {"round_trip": {k: summary_ms(v) for k, v in rt.items()},
            "round_trip_delta_ms": (statistics.median(rt[H]) - statistics.median(rt[C])) * 1e3,
            "releases_per_s": {k: statistics.median(v) for k, v in per_s.items()},
            "releases_ratio": statistics.median(per_s[H]) / statistics.median(per_s[C]),
            "releases_ratio_of_pairs": statistics.median(a / b for a, b in zip(per_s[H], per_s[C])),
            # The same ratio from the per-call interleaved round trips (1 client: rate = 1 / mean).
            "releases_ratio_interleaved_calls": statistics.fmean(rt[C]) / statistics.fmean(rt[H]),
            "releases_per_s_blocks": per_s,
            "service_cpu_ms_per_release": cpu_ms,
            "capacity_ratio_from_service_cpu": cpu_ms[C] / cpu_ms[H] if cpu_ms[H] else float("nan"),
            "rounds": rounds, "block_s": seconds}


def cold(world: LocalWorld, work: Path, reps: int) -> dict:
    pack = world.deploy_pack("pq-cold", {"digits": MODELS["digits"]})
    runs: dict[str, list[dict]] = {H: [], C: []}
    with open(work / "cold.log", "ab") as log:
        for r in range(reps):
            for k in ((H, C) if r % 2 == 0 else (C, H)):
                cmd = None if k == H else (lambda port: [sys.executable, str(HERE / "classical_action.py")])
                runs[k].append(retried(sesemi_cold, world, pack, "digits", log, cmd=cmd))
            progress(f"cold start rep {r + 1}/{reps}: hybrid {runs[H][-1]['total_s'] * 1e3:.0f} ms, "
                     f"X25519 {runs[C][-1]['total_s'] * 1e3:.0f} ms")
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    return {"median": med, "ratio_total": med[H]["total_s"] / med[C]["total_s"],
            "ratio_cpu": med[H]["cpu_s"] / med[C]["cpu_s"],
            "ratio_of_paired": statistics.median(a["total_s"] / b["total_s"] for a, b in zip(runs[H], runs[C])),
            "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=25, help="cold starts per arm")
    ap.add_argument("--n", type=int, default=600, help="release round trips per arm")
    ap.add_argument("--seconds", type=float, default=0.5, help="one releases/s block")
    ap.add_argument("--rounds", type=int, default=30, help="releases/s blocks per arm")
    args = parse_args(ap)
    if args.smoke:
        args.reps, args.n, args.seconds, args.rounds = 1, 5, 0.1, 2
    out: dict = {"micro_us": hpke_micro(20 if args.smoke else 2000)}
    progress("HPKE µs: " + ", ".join(f"{k} {v:.0f}" for k, v in out["micro_us"].items()))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sesemi-bench-pq-") as tmp:
        world = LocalWorld.start(Path(tmp) / "world", ks_args=["--insecure-allow-classical-kem"])
        try:
            pack = world.deploy_pack("pq", {"digits": MODELS["digits"]})
            mr = world.mrenclave(pack)
            out["sizes"] = sizes(world, mr)
            out["release"] = releases(world, mr, args.n, args.seconds, args.rounds)
            rel = out["release"]
            progress(f"release round trip: +{rel['round_trip_delta_ms']:.3f} ms hybrid; releases/s "
                     f"×{rel['releases_ratio']:.3f}; key-service CPU per release "
                     f"{rel['service_cpu_ms_per_release'][H]:.3f} against {rel['service_cpu_ms_per_release'][C]:.3f} ms")
            out["cold"] = cold(world, Path(tmp), args.reps)
            progress(f"cold start: ×{out['cold']['ratio_total']:.3f} hybrid / X25519")
        finally:
            world.stop()
    write_result("pq", out)


if __name__ == "__main__":
    main()
