"""Key service at scale: key releases per second and p99 latency
for SQLite with 1 replica, PostgreSQL with 1 and with 2 replicas (the
replicas share one identity, B joined A by attestation), 4 enclave clients
over HTTP on loopback; and the time from a replica's death (SIGKILL) or
freeze (SIGSTOP) to the first successful release on the other replica,
through the SDK's failover. On a shared 2-core machine: read the ratios."""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path


from bench.common import parse_args, progress, write_result
from bundle_tool.testing import postgres as pg_local
from bundle_tool.testing.processes import Server, free_port, start
from sesemi import hpke_box, sealed_model
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.client import EnclaveKeyClient, KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.identity import Identity
from sesemi.policy import EnclavePolicy

MR = "ab" * 32
SEAL = "5e" * 16
CLIENTS = 4


def replica(work: Path, name: str, db: str, join: str | None = None) -> Server:
    port = free_port()
    args = ["keyservice", "serve", "--db", db, "--port", str(port), "--insecure-sim-attestation", "--threads", "8"]
    if db.startswith("postgresql://"):
        args += ["--secrets", str(work / f"{name}.secrets")]
    if join:
        args += ["--join", join]
    return start(name, args, port, work / "logs", "/healthz")


def setup(urls: list[str]) -> tuple[str, bytes]:
    pin = attest_key_service(",".join(urls), insecure_sim=True)
    ks = KeyServiceClient(pin)
    owner, user = Identity.generate("o"), Identity.generate("u")
    ks.register(owner)
    ks.register(user)
    ks.publish_model(owner, "m", sealed_model.new_model_key(), EnclavePolicy(mrenclave=(MR,)), SEAL)
    ks.grant(owner, "m", user.principal_id)
    ks.enroll(user, "m", new_request_key())
    return user.principal_id, bytes.fromhex(pin.signing_public_key)


def session(url: str, ks_key: bytes) -> tuple[EnclaveKeyClient, str]:
    c = EnclaveKeyClient(url, ks_signing_key=ks_key)
    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = c.nonce()
    token, _ = c.attest(nonce, SimBackend(MR).evidence(report_data_binding(nonce, pub)), pub)
    return c, token


def releases(urls: list[str], uid: str, ks_key: bytes, seconds: float) -> dict:
    """CLIENTS threads, spread over the replicas, each releasing model + request key."""
    from bench.loadgen import run_clients

    sessions = [session(urls[i % len(urls)], ks_key) for i in range(CLIENTS)]
    return run_clients(CLIENTS, lambda i: sessions[i][0].keys(sessions[i][1], "m", uid, True, seal_id=SEAL),
                       seconds)


def failover(servers: list[Server], uid: str, ks_key: bytes, how: signal.Signals) -> float:
    """Seconds from the signal to replica A to the first successful release through 'A,B'."""
    c, token = session(",".join(s.url for s in servers), ks_key)
    for _ in range(20):
        c.keys(token, "m", uid, True, seal_id=SEAL)  # warm, on A
    t0 = time.perf_counter()
    servers[0].proc.send_signal(how)
    while True:
        try:
            c.keys(token, "m", uid, True, seal_id=SEAL)
            return time.perf_counter() - t0
        except Exception:
            if time.perf_counter() - t0 > 30:
                raise


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    args = parse_args(ap)
    out: dict = {"clients": CLIENTS}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-scale-") as tmp:
        work = Path(tmp)
        a = replica(work, "sqlite", str(work / "ks.db"))
        try:
            uid, key = setup([a.url])
            out["sqlite_1"] = releases([a.url], uid, key, 0.2 if args.smoke else args.seconds)
        finally:
            a.stop()
        progress(f"SQLite, 1 replica: {out['sqlite_1']['releases_per_s']:.0f} releases/s, "
                 f"p99 {out['sqlite_1']['p99_ms']:.1f} ms")
        if args.smoke:  # the PostgreSQL paths are exercised by tests/pg
            write_result("keyservice_scale", out)
            return
        pg = pg_local.start()
        try:
            for n in (1, 2):
                db = pg.create_db(f"bench{n}")
                servers = [replica(work, f"pg{n}-a", db)]
                try:
                    if n == 2:
                        servers.append(replica(work, f"pg{n}-b", db, join=servers[0].url))
                    urls = [s.url for s in servers]
                    uid, key = setup(urls)
                    r = releases(urls, uid, key, args.seconds)
                    out[f"postgresql_{n}"] = r
                    progress(f"PostgreSQL, {n} replica(s): {r['releases_per_s']:.0f} releases/s, "
                             f"p99 {r['p99_ms']:.1f} ms")
                    if n == 2:
                        out["failover_after_sigkill_s"] = failover(servers, uid, key, signal.SIGKILL)
                        progress(f"SIGKILL of A -> first success on B: {out['failover_after_sigkill_s']:.3f} s")
                finally:
                    for s in servers:
                        s.stop()
            db = pg.create_db("bench_freeze")
            servers = [replica(work, "fz-a", db)]
            servers.append(replica(work, "fz-b", db, join=servers[0].url))
            try:
                uid, key = setup([s.url for s in servers])
                out["failover_after_sigstop_s"] = failover(servers, uid, key, signal.SIGSTOP)
                progress(f"SIGSTOP of A -> first success on B: {out['failover_after_sigstop_s']:.3f} s "
                         "(the enclave client's read timeout, then B)")
                servers[0].proc.send_signal(signal.SIGCONT)
            finally:
                for s in servers:
                    s.stop()
        finally:
            pg.stop()
    base = out["sqlite_1"]["releases_per_s"]
    out["ratios_vs_sqlite_1"] = {k: out[k]["releases_per_s"] / base for k in ("postgresql_1", "postgresql_2")}
    progress("ratios vs SQLite 1 replica: " + ", ".join(f"{k} {v:.2f}" for k, v in out["ratios_vs_sqlite_1"].items()))
    write_result("keyservice_scale", out)


if __name__ == "__main__":
    main()
