"""The log at 100,000 leaves (docs/keyservice.md, "Figures"):

- start-up: a key service resuming from its sealed snapshot against one that
  must walk every leaf (the snapshot table emptied: what every start-up did
  before snapshots), interleaved, in this process;
- stall: /healthz latency on a running key service, alone and while one
  client loops over `GET /v1/audit?verify=1` (the owner's newest 100 of its
  2,000 entries, each with its inclusion proof, checked by the client),
  interleaved rounds.

    .venv/bin/python -m bench.bench_log_scale [--leaves 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import urllib3


from bench.common import parse_args, progress, write_result
from bundle_tool.testing.processes import free_port, start
from keyservice import KeyService, KeyServiceConfig
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.identity import Identity


def build(db: Path, leaves: int, owner: Identity) -> None:
    """`leaves` releases, one in fifty of the owner's model (what its audit shows)."""
    from sesemi import hpke_box
    from sesemi.encoding import b64e
    from sesemi.policy import EnclavePolicy

    ks = KeyService(KeyServiceConfig(db_path=db, insecure_sim_attestation=True))
    ks.register_principal(owner.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m0", owner.principal_id, "5e" * 16))
    ks.put_model(owner.principal_id, "m0", {"wrapped_key": b64e(box), "seal_id": "5e" * 16,
                                            "policy": EnclavePolicy(mrenclave=("ab" * 32,)).to_json()})
    with ks.store.tx() as c:
        for i in range(leaves):
            ks.store.audit(c, 1.0, "release", "ok", model_id=f"m{i % 50}", user_id=None)
    ks.store.snapshot()
    ks.store.close()


def startup_s(db: Path, with_snapshot: bool) -> float:
    if not with_snapshot:
        with sqlite3.connect(db) as con:
            saved = con.execute("SELECT * FROM log_snapshots").fetchall()
            con.execute("DELETE FROM log_snapshots")
    t0 = time.perf_counter()
    ks = KeyService(KeyServiceConfig(db_path=db, insecure_sim_attestation=True))
    took = time.perf_counter() - t0
    ks.store.close()
    if not with_snapshot:
        with sqlite3.connect(db) as con:
            con.executemany(f"INSERT OR IGNORE INTO log_snapshots VALUES ({','.join('?' * 5)})", saved)
    return took


def healthz_ms(url: str, n: int) -> list[float]:
    http = urllib3.PoolManager(maxsize=1)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        http.request("GET", url + "/healthz")
        out.append(1e3 * (time.perf_counter() - t0))
        time.sleep(0.005)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = parse_args(ap)
    leaves, rounds = (5_000, 1) if args.smoke else (args.leaves, args.rounds)
    out: dict = {"leaves": leaves, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-log-") as tmp:
        work = Path(tmp)
        db = work / "ks" / "ks.db"
        progress(f"writing {leaves} leaves")
        owner = Identity.generate("owner")
        build(db, leaves, owner)
        snap, walk = [], []
        for r in range(rounds):
            for with_snapshot in ((True, False) if r % 2 == 0 else (False, True)):
                (snap if with_snapshot else walk).append(startup_s(db, with_snapshot))
        out["startup_s"] = {"snapshot": statistics.median(snap), "full_walk": statistics.median(walk),
                            "ratio": statistics.median(s / w for s, w in zip(snap, walk))}
        progress(f"start-up at {leaves} leaves: snapshot {out['startup_s']['snapshot']:.3f} s, "
                 f"full walk {out['startup_s']['full_walk']:.3f} s")
        port = free_port()
        srv = start("keyservice", ["keyservice", "serve", "--db", str(db), "--port", str(port),
                                   "--insecure-sim-attestation"], port, work / "logs", "/healthz")
        try:
            ks = KeyServiceClient(attest_key_service(srv.url, insecure_sim=True))
            assert len(ks.audit_answer(owner, verify=True)["entries"]) == 100  # each with its inclusion proof
            alone, loaded = [], []
            for _round in range(rounds):
                alone += healthz_ms(srv.url, 40)
                stop = threading.Event()

                def audits() -> None:
                    while not stop.is_set():
                        ks.audit_answer(owner, verify=True)

                t = threading.Thread(target=audits)
                t.start()
                loaded += healthz_ms(srv.url, 40)
                stop.set()
                t.join()
            p = lambda v, q: sorted(v)[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
            out["healthz_ms"] = {"alone_p50": p(alone, 0.5), "alone_p99": p(alone, 0.99),
                                 "with_audit_verify_p50": p(loaded, 0.5), "with_audit_verify_p99": p(loaded, 0.99)}
            progress(f"/healthz p50 alone {out['healthz_ms']['alone_p50']:.2f} ms, with audit?verify=1 looping "
                     f"{out['healthz_ms']['with_audit_verify_p50']:.2f} ms (p99 {out['healthz_ms']['alone_p99']:.2f}"
                     f" / {out['healthz_ms']['with_audit_verify_p99']:.2f})")
        finally:
            srv.stop()
    write_result("log_scale", out)


if __name__ == "__main__":
    main()
