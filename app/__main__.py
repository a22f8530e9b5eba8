"""`python -m app`: the action image's entry point. Settings come from the
environment (in Occlum: Occlum.json's env.default, measured) and /init."""

import os

from sesemi.openwhisk_limits import DEFAULT_ACTION_THREADS

from . import serve

serve({}, host=os.environ.get("SESEMI_HOST", "0.0.0.0"), port=int(os.environ.get("SESEMI_PORT", "8080")),
      threads=int(os.environ.get("SESEMI_THREADS", str(DEFAULT_ACTION_THREADS))))
