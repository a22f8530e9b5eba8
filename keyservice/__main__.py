"""`python -m keyservice`: the key-service image's entry point, configured by environment."""

import os
import sys

from sesemi.errors import SesemiError

from sesemi import build_stamp

from . import KeyServiceConfig, serve

try:
    config = KeyServiceConfig.for_database(
        os.environ.get("SESEMI_KS_DB", "/data/ks.db"),
        insecure_sim_attestation=os.environ.get("SESEMI_INSECURE_SIM_ATTESTATION", "") == "1",
        insecure_allow_classical_kem=os.environ.get("SESEMI_INSECURE_ALLOW_CLASSICAL_KEM", "") == "1",
        token_ttl_s=int(os.environ.get("SESEMI_KS_TOKEN_TTL", "600")),
        tee=os.environ.get("SESEMI_TEE", "sim"), pccs_url=os.environ.get("SESEMI_PCCS_URL") or None,
        min_tcb_eval=int(os.environ.get("SESEMI_MIN_TCB_EVAL", "0")),
        release_max_requests=int(os.environ.get("SESEMI_RELEASE_MAX_REQUESTS", "10000")),
        # Stamped by the image build into the measured env.default (occlum_instance/render.py).
        build_date=build_stamp.build_date({"SESEMI_BUILD_DATE": os.environ.get("SESEMI_BUILD_DATE", "")}))
    serve(config, host=os.environ.get("SESEMI_HOST", "0.0.0.0"), port=int(os.environ.get("SESEMI_PORT", "8443")),
          threads=int(os.environ.get("SESEMI_THREADS", "8")))
except SesemiError as exc:  # a start-up refusal (missing ML-KEM, secrets file...): one line, no traceback
    sys.exit(f"sesemi key service: {exc}")
