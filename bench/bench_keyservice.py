"""(e) Key service: key releases per second and attestation verifications per
second, with 1 and 4 concurrent clients, over HTTP on loopback. Sim evidence
goes through the service's API; DCAP quote verification (the fixture quote,
dcap-qvl) is measured in-process where the verifier is available."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from bench.common import MODELS, REPO, progress, parse_args, write_result
from bundle_tool.testing.world import LocalWorld
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.client import EnclaveKeyClient


ATTEST_CALLS = 60


def rate(fn, clients: int, seconds: float, max_calls: int | None = None) -> float:
    """Calls per second of `fn()()` from `clients` threads for `seconds`, or until
    `max_calls` in all (to stay inside a rate limiter's burst)."""
    from bench.loadgen import run_clients

    calls = [fn() for _ in range(clients)]
    return float(run_clients(clients, lambda i: calls[i](), seconds, max_calls)["releases_per_s"])


def dcap_rate(seconds: float, clients: int) -> float:
    """DCAP verification of the fixture quote (dcap-qvl) with file collateral and
    "now" inside its validity window, in-process, `clients` threads."""
    from datetime import datetime

    from sesemi.attestation.dcap import DcapVerifier, FileCollateral

    fixtures = REPO / "tests" / "fixtures" / "dcap"
    quote = (fixtures / "sgx_quote.bin").read_bytes()
    inside = datetime.fromisoformat("2025-07-01T12:00:00+00:00").timestamp()
    verifier = DcapVerifier(FileCollateral(fixtures / "sgx_quote_collateral.json"), clock=lambda: inside)
    return rate(lambda: (lambda: verifier.verify_quote(quote)), clients, seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = parse_args(ap)
    if args.smoke:
        args.seconds = 0.1
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="sesemi-bench-") as tmp:
        world = LocalWorld.start(Path(tmp) / "world")
        try:
            pack = world.deploy_pack("ks", {"digits": MODELS["digits"]})
            mr = world.mrenclave(pack)  # as published: the pinned action's measurement
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
                return lambda: c.keys(token, "digits", uid, True, seal_id=world.seal_ids["digits"])

            # The key service limits attestation nonces per client address (20/s, burst
            # 200: keyservice/config.py); every client here is 127.0.0.1, so each run
            # stays inside the burst (the releasers' setup attests once per client too).
            for clients in (1, 4):
                a = rate(attester, clients, args.seconds, max_calls=ATTEST_CALLS)
                r = rate(releaser, clients, args.seconds)
                out[f"clients_{clients}"] = {"sim_attestations_per_s": a, "key_releases_per_s": r}
                progress(f"{clients} client(s): {a:.0f} sim attestations/s (nonce + verify + token), "
                         f"{r:.0f} key releases/s (model + request key)")
        finally:
            world.stop()
    out["dcap"] = {}
    for clients in (1, 4):
        r = dcap_rate(args.seconds, clients)
        out["dcap"][f"clients_{clients}"] = r
        progress(f"DCAP fixture quote, {clients} thread(s): {r:.0f} verifications/s (in-process, dcap-qvl)")
    write_result("keyservice", out)


if __name__ == "__main__":
    main()
