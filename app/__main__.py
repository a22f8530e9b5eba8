"""`python -m app`: the action image's entry point. Settings come from the
environment (in Occlum: Occlum.json's env.default, measured) and /init."""

import os
import sys

from sesemi.errors import SesemiError

from sesemi.openwhisk_limits import DEFAULT_ACTION_THREADS

from . import serve

try:
    serve({}, host=os.environ.get("SESEMI_HOST", "0.0.0.0"), port=int(os.environ.get("SESEMI_PORT", "8080")),
          threads=int(os.environ.get("SESEMI_THREADS", str(DEFAULT_ACTION_THREADS))))
except SesemiError as exc:  # a start-up refusal (missing ML-KEM, no SGX device...): one line, no traceback
    sys.exit(f"sesemi action: {exc}")
