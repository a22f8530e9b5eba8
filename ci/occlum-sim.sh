#!/usr/bin/env bash
# Occlum SIM-mode pipeline: build both appliances with Occlum in simulation mode,
# start them as containers, and run the end-to-end flow against them with
# simulated evidence (ci/occlum_sim_e2e.py), then upgrade the key service (same
# signer, new build) on the same volume and check that the new enclave still opens
# the old database. Not part of .ci/run: it needs Docker
# with BuildKit, the occlum/occlum image, and network access for the first build
# (CPython source from python.org, wheels from PyPI). No SGX hardware needed.
#
#   bash ci/occlum-sim.sh                 # from the repository root
#   KEEP=1 bash ci/occlum-sim.sh          # leave the containers running afterwards
#
# Environment: DOCKER (default docker), OCCLUM_IMAGE (default
# occlum/occlum:0.30.1-ubuntu20.04), PYTHON (default python3, 3.11+),
# KS_PORT / ACTION_PORT (host ports on 127.0.0.1, default 18443 / 18080).
# Exit status 0 means every check passed; docs/deploy.md explains the output.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-docker}"
OCCLUM_IMAGE="${OCCLUM_IMAGE:-occlum/occlum:0.30.1-ubuntu20.04}"
PYTHON="${PYTHON:-python3}"
KS_PORT="${KS_PORT:-18443}"
ACTION_PORT="${ACTION_PORT:-18080}"
NAME=sesemi-occlum-sim
WORK=build/occlum-sim
PACK=build/occlum-sim.pack   # inside the build context (.dockerignore lets build/*.pack through)
export DOCKER_BUILDKIT=1

step() { printf '\n== %s\n' "$*"; }

cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "KEEP=1: containers $NAME-ks and $NAME-action are still running"
        return
    fi
    $DOCKER rm -f "$NAME-action" "$NAME-ks" >/dev/null 2>&1 || true
    [ -z "${KS_DATA:-}" ] || rm -rf "$KS_DATA" 2>/dev/null || true
    $DOCKER network rm "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "tools"
command -v "$DOCKER" >/dev/null || { echo "needs docker (or DOCKER=podman)"; exit 2; }
if [ ! -x .venv/bin/python ]; then
    make install PY="$PYTHON"
fi
SESEMI=".venv/bin/python -m bundle_tool"

step "seal the demo model into a pack (owner side; the key stays in $WORK/home)"
rm -rf "$WORK" && mkdir -p "$WORK"
$SESEMI --home "$WORK/home" model seal models/digits/digits.tflite --model-id digits --out "$WORK/digits.sealed"
$SESEMI pack build --out "$PACK" "$WORK/digits.sealed"

step "build the key-service appliance (Occlum SIM)"
time $DOCKER build -f images/keyservice.Dockerfile --build-arg OCCLUM_IMAGE="$OCCLUM_IMAGE" \
    --build-arg SGX_MODE=SIM --target keyservice-sim -t "$NAME-keyservice" .

step "build the next key-service release: same signer (SIM: Occlum's template key), another configuration"
# --ks-threads changes Occlum.json's env.default (SESEMI_THREADS), so MRENCLAVE
# changes; the signer does not. What an upgrade changes, short of new code.
time $DOCKER build -f images/keyservice.Dockerfile --build-arg OCCLUM_IMAGE="$OCCLUM_IMAGE" \
    --build-arg SGX_MODE=SIM --build-arg RENDER_OPTIONS="--ks-threads 9" --target keyservice-sim \
    -t "$NAME-keyservice-next" .

step "build the action appliance (Occlum SIM) with the pack"
time $DOCKER build -f images/action.Dockerfile --build-arg OCCLUM_IMAGE="$OCCLUM_IMAGE" \
    --build-arg SGX_MODE=SIM --build-arg PACK="$PACK" --target action-sim -t "$NAME-action" .

step "measurements printed by build.sh"
$DOCKER run --rm --entrypoint cat "$NAME-keyservice" /opt/sesemi/out/keyservice.measurement | tee "$WORK/ks.measurement"
$DOCKER run --rm --entrypoint cat "$NAME-keyservice-next" /opt/sesemi/out/keyservice.measurement | tee "$WORK/ks-next.measurement"
$DOCKER run --rm --entrypoint cat "$NAME-action" /opt/sesemi/out/action.measurement
field() { sed -n "s/^$1=//p" "$2"; }
if [ "$(field mrsigner "$WORK/ks.measurement")" != "$(field mrsigner "$WORK/ks-next.measurement")" ] || \
   [ "$(field mrenclave "$WORK/ks.measurement")" = "$(field mrenclave "$WORK/ks-next.measurement")" ]; then
    echo "FAIL the next key-service build must have the same mrsigner and a new mrenclave"; exit 1
fi
echo "ok   next key-service build: same mrsigner, new mrenclave"

step "start both (one network; the action reaches the key service by its address)"
cleanup
$DOCKER network create "$NAME" >/dev/null
# The key service's data on a bind mount of an empty host directory: nothing but
# the entry point (images/occlum-entry.sh) creates the SEFS source in it.
KS_DATA="$(mktemp -d)"
KS_RUN="$DOCKER run -d --name $NAME-ks --network $NAME -p 127.0.0.1:$KS_PORT:8443 -v $KS_DATA:/var/lib/sesemi-ks"
$KS_RUN "$NAME-keyservice" >/dev/null
$DOCKER run -d --name "$NAME-action" --network "$NAME" -p "127.0.0.1:$ACTION_PORT:8080" "$NAME-action" >/dev/null
KS_IP="$($DOCKER inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME-ks")"

step "end-to-end flow with simulated evidence"
status=0
.venv/bin/python ci/occlum_sim_e2e.py --home "$WORK/home" --pack "$PACK" \
    --ks "http://127.0.0.1:$KS_PORT" --ks-from-action "http://$KS_IP:8443" \
    --action "http://127.0.0.1:$ACTION_PORT" --restart-ks "$DOCKER restart $NAME-ks >/dev/null" \
    --upgrade-ks "$DOCKER rm -f $NAME-ks >/dev/null && $KS_RUN $NAME-keyservice-next >/dev/null" \
    || status=$?
if [ "$status" = 0 ]; then
    # Only ciphertext on the host: SEFS files exist there, none holds an SQLite header.
    rc=0; grep -rq "SQLite format 3" "$KS_DATA/sefs" || rc=$?
    if [ -z "$(find "$KS_DATA/sefs" -type f 2>/dev/null | head -1)" ] || [ "$rc" != 1 ]; then
        echo "FAIL the key service's data under $KS_DATA/sefs is missing, unreadable or plaintext (grep rc=$rc)"
        status=1
    else
        echo "ok   the key service's data on the host is there and is not plaintext SQLite"
    fi
fi
if [ "$status" != 0 ]; then
    step "logs"
    $DOCKER logs "$NAME-ks" 2>&1 | tail -40 || true
    $DOCKER logs "$NAME-action" 2>&1 | tail -40 || true
fi
exit "$status"
