"""The end-to-end flow against the two Occlum appliances in SIM mode (ci/occlum-sim.sh).

The owner and the user act through the SDK from this machine; the key service
and the action run inside Occlum (SIM mode: no SGX, so both present SIMULATED
evidence, and the key service accepts it only because its dev config sets
SESEMI_INSECURE_SIM_ATTESTATION=1). Checks, in order:

1. the key service's simulated measurement is the one this checkout predicts
   (the code in the enclave is this code), and pinning it works;
2. owner publishes digits for the action's predicted measurement, grants the user,
   the user enrolls a request key;
3. OpenWhisk's protocol against the action: /init with value.env, then /run;
   the decrypted outputs equal plaintext LiteRT on this machine;
4. the key service restarts and still has its keys and records: the database
   and the service's secrets live on the SEFS sealed to MRSIGNER (a volume);
5. with --upgrade-ks: the same after the container is replaced by a new build
   from the same signer (ci/occlum-sim.sh checks the new MRENCLAVE and the same
   MRSIGNER in the build's measurement files): the new enclave opens the old
   database. In SIM mode the key service attests with its *simulated*
   measurement, which a change of thread count leaves as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle_tool.home import Home  # noqa: E402
from bundle_tool.testing.world import mrenclave_for  # noqa: E402
from bundle_tool.testing.reference import plaintext_outputs  # noqa: E402
from keyservice.config import KeyServiceConfig  # noqa: E402
from sesemi.client import ActionClient, KeyServiceClient, attest_key_service  # noqa: E402
from sesemi.envelope import new_request_key  # noqa: E402
from sesemi.measure import keyservice_mrenclave  # noqa: E402
from sesemi.policy import EnclavePolicy  # noqa: E402

passed = failed = 0


def check(what: str, ok: bool, detail: str = "") -> None:
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""), flush=True)


def wait(url: str, path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + path, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def plaintext(x: np.ndarray) -> dict[str, np.ndarray]:
    return plaintext_outputs(REPO / "models/digits/digits.tflite", x)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--home", required=True, help="the owner's/user's state (holds the digits model key)")
    p.add_argument("--ks", required=True, help="key service URL from this machine")
    p.add_argument("--ks-from-action", required=True, help="key service URL as the action container sees it")
    p.add_argument("--action", required=True)
    p.add_argument("--pack", required=True)
    p.add_argument("--restart-ks", required=True, help="shell command that restarts the key-service container")
    p.add_argument("--upgrade-ks", help="shell command that replaces the key service by a new build of the same "
                   "signer on the same volume")
    args = p.parse_args()
    home = Home(args.home)
    wait(args.ks, "/healthz")
    predicted = keyservice_mrenclave(KeyServiceConfig(db_path=Path("/data/ks.db"), insecure_sim_attestation=True,
                                                      token_ttl_s=600).trusted())
    pin = attest_key_service(args.ks, insecure_sim=True, expect_mrenclave=predicted)
    check("key service attests with the predicted (simulated) measurement", pin.mrenclave == predicted)
    check("its evidence is labelled simulated", pin.insecure_simulation)
    home.save_pin(pin)
    ks = KeyServiceClient(pin)
    owner, user = home.new_identity("owner"), home.new_identity("user")
    ks.register(owner)
    ks.register(user)
    action_mr = mrenclave_for(Path(args.pack))
    ks.publish_model(owner, "digits", home.model_key("digits"), EnclavePolicy(mrenclave=(action_mr,)),
                     home.model_seal_id("digits"))
    ks.grant(owner, "digits", user.principal_id)
    rk = new_request_key()
    ks.enroll(user, "digits", rk)

    wait(args.action, "/stats")
    r = requests.post(args.action + "/run", json={"value": {}}, timeout=30)
    # 502 as the reference action proxy answers (a 503 would tell OpenWhisk the runtime is shutting down)
    check("/run before /init is refused (502)", r.status_code == 502, r.text)
    r = requests.post(args.action + "/init", json={"value": {"name": "digits", "main": "main", "code": "",
                                                             "env": {"SESEMI_KS_URL": args.ks_from_action}}},
                      timeout=300)
    check("/init with value.env", r.status_code == 200, r.text)
    body = r.json() if r.status_code == 200 else {}
    check("the action in Occlum reports the predicted measurement", body.get("mrenclave") == action_mr,
          f"{body.get('mrenclave')} != {action_mr}")
    check("and says it is a simulation", body.get("insecure_simulation") is True)
    held = np.load(REPO / "models/digits/digits_heldout.npz")
    x = held["x"][:20].astype(np.float32)
    res = ActionClient(args.action).infer("digits", user.principal_id, rk, {"image": x})
    ref = plaintext(x)
    check("encrypted inference equals plaintext LiteRT",
          all(np.array_equal(res.outputs[k], ref[k]) for k in ref))
    check("the response is labelled insecure_simulation", res.insecure_simulation is True)

    for what, command in (("a restart", args.restart_ks), ("an upgrade (same signer, new build)", args.upgrade_ks)):
        if not command:
            continue
        subprocess.run(command, shell=True, check=True)
        wait(args.ks, "/healthz")
        pin2 = attest_key_service(args.ks, insecure_sim=True, expect_mrenclave=predicted)
        check(f"after {what} the key service has the same HPKE key (sealed SEFS)",
              pin2.hpke_public_key == pin.hpke_public_key)
        events = KeyServiceClient(pin2).audit(owner, "digits")
        check("and its records", any(e["event"] == "release" and e["outcome"] == "ok" for e in events),
              str(events[-3:]))
    print(f"occlum-sim e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
