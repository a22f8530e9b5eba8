"""(e) Key service: key releases per second and attestation verifications per
second, with 1 and 4 concurrent clients, over HTTP on loopback. Sim evidence
goes through the service's API; DCAP quote verification (the fixture quote,
dcap-qvl) is measured in-process where the verifier is available."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS, progress, write_result  # noqa: E402
from bundle_tool.local import LocalWorld, mrenclave_for  # noqa: E402
from sesemi import hpke_box  # noqa: E402
from sesemi.attestation.claims import report_data_binding  # noqa: E402
from sesemi.attestation.sim import SimBackend  # noqa: E402
from sesemi.client import EnclaveKeyClient  # noqa: E402


def rate(fn, clients: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def worker(i: int) -> None:
        ctx = fn()
        while time.perf_counter() < stop:
            ctx()
            counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def dcap_rate(seconds: float) -> dict | None:
    """In-process DCAP verification of the fixture quote, if the verifier exists in this build."""
    try:
        from sesemi.attestation import dcap  # type: ignore[attr-defined]
    except ImportError:
        return None
    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dcap"
    quote = (fixtures / "sgx_quote.bin").read_bytes()
    collateral = (fixtures / "sgx_quote_collateral.json").read_text()
    verify = getattr(dcap, "bench_verify", None)
    if verify is None:
        return None
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        verify(quote, collateral)
        n += 1
    return {"verifications_per_s_in_process_1_thread": n / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-") as tmp:
        world = LocalWorld.start(Path(tmp) / "world")
        try:
            pack = world.deploy_pack("ks", {"digits": MODELS["digits"]})
            mr = mrenclave_for(pack)
            url, uid = world.ks_server.url, world.user.principal_id

            def attester():
                c = EnclaveKeyClient(url)
                pub = hpke_box.public_raw(hpke_box.new_private_key())
                tee = SimBackend(mr)

                def once():
                    nonce = c.nonce()
                    return c.attest(nonce, tee.evidence(report_data_binding(nonce, pub)), pub)[0]
                return once

            def releaser():
                c = EnclaveKeyClient(url)
                token = attester()()
                return lambda: c.keys(token, "digits", uid, True)

            for clients in (1, 4):
                a = rate(attester, clients, args.seconds)
                r = rate(releaser, clients, args.seconds)
                out[f"clients_{clients}"] = {"sim_attestations_per_s": a, "key_releases_per_s": r}
                progress(f"{clients} client(s): {a:.0f} sim attestations/s (nonce + verify + token), "
                         f"{r:.0f} key releases/s (model + request key)")
        finally:
            world.stop()
    d = dcap_rate(args.seconds)
    if d:
        out["dcap"] = d
        progress(f"DCAP fixture quote: {d['verifications_per_s_in_process_1_thread']:.0f} verifications/s in-process")
    write_result("keyservice", out)


if __name__ == "__main__":
    main()
