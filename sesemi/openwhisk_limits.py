"""OpenWhisk's bounds and the action image's defaults: constants only, so the
action's entry point can read them without importing the REST client (and
urllib3) into every cold start and its enclave image."""

# Bounds of OpenWhisk's default deployment (docs/reference.md of OpenWhisk).
MEMORY_MB = (128, 8192)      # the prototype used 128 MB .. 8 GB
TIMEOUT_MS = (100, 600_000)
CONCURRENCY = (1, 500)
# The action image's connection threads unless its SESEMI_THREADS says otherwise
# (app/__main__.py reads this): `sesemi deploy` refuses a concurrency above it.
DEFAULT_ACTION_THREADS = 64
