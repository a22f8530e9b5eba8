#!/usr/bin/env bash
# Build the SeSeMI Occlum appliances: occlum new, copy_bom, render Occlum.json,
# occlum build (integrity-only image), occlum package; then print the measurements
# that owners pin (`sesemi model publish --allow-mrenclave`, `sesemi ks attest
# --expect-mrenclave`).
#
#   build.sh --mode SIM|HW [--pack PATH] [--sign-key FILE] [--appliance action|keyservice|both]
#            [--out DIR] [--ks-url URL] [--ks-key HEX] [--pccs-url URL] [-- RENDER-OPTIONS...]
#
# Runs in the builder stage of images/*.Dockerfile (the occlum/occlum image plus
# /opt/python-occlum and /opt/sesemi-deps from the python and deps stages), or by
# hand in a container of that stage. RENDER-OPTIONS go to render.py (e.g.
# --concurrency 8 --pool-size 2 --memory-budget-mb 512); see docs/occlum-sizing.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${SESEMI_BUILD_PYTHON:-/opt/python-occlum/bin/python3}"
DEPS="${SESEMI_DEPS:-/opt/sesemi-deps/site-packages}"
SRC=/opt/sesemi/src          # the boms copy code from here ...
STAGE=/opt/sesemi/stage      # ... and the pack from here
OCCLUM_TEMPLATE_KEY=/opt/occlum/etc/template/Enclave.pem

MODE="" PACK="" SIGN_KEY="" APPLIANCES="both" OUT=/opt/sesemi/out KS_URL="" KS_KEY="" PCCS_URL=""
RENDER_EXTRA=()

die() { echo "build.sh: $*" >&2; exit 2; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --mode) MODE="${2:-}"; shift 2 ;;
        --pack) PACK="${2:-}"; shift 2 ;;
        --sign-key) SIGN_KEY="${2:-}"; shift 2 ;;
        --image-key) die "no --image-key: the images are integrity-only so that every writable SEFS (the key service's /data included) is sealed with the MRSIGNER auto key; an image key would replace it (docs/occlum.md, Sealing)" ;;
        --appliance) APPLIANCES="${2:-}"; shift 2 ;;
        --out) OUT="${2:-}"; shift 2 ;;
        --ks-url) KS_URL="${2:-}"; shift 2 ;;
        --ks-key) KS_KEY="${2:-}"; shift 2 ;;
        --pccs-url) PCCS_URL="${2:-}"; shift 2 ;;
        --) shift; RENDER_EXTRA=("$@"); break ;;
        -h|--help) usage ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$MODE" in
    SIM) CONFIG=dev; export SGX_MODE=SIM; PACKAGE_FLAGS=(--debug) ;;
    HW) CONFIG=prod; export SGX_MODE=HW; PACKAGE_FLAGS=() ;;
    *) die "--mode SIM or --mode HW is required" ;;
esac
case "$APPLIANCES" in
    both) APPLIANCES="keyservice action" ;;
    action|keyservice) ;;
    *) die "--appliance must be action, keyservice or both" ;;
esac

command -v occlum >/dev/null || die "occlum is not on PATH (run inside the occlum/occlum builder image)"
command -v copy_bom >/dev/null || die "copy_bom is not on PATH (it comes with Occlum: /opt/occlum/build/bin)"
[ -x "$PYTHON" ] || die "no Python at $PYTHON (the Dockerfile's python stage builds it; or set SESEMI_BUILD_PYTHON)"
[ -d "$DEPS" ] || die "no site-packages at $DEPS (the Dockerfile's deps stage installs them; or set SESEMI_DEPS)"

if [ "$MODE" = HW ] && [[ " $APPLIANCES " == *" keyservice "* ]] && [ -z "$PCCS_URL" ]; then
    die "a HW key service needs --pccs-url: it verifies enclaves' DCAP quotes with collateral from that PCCS (the enclave cannot read the host's /etc/sgx_default_qcnl.conf)"
fi

SIGN_ARGS=()
if [ "$MODE" = HW ]; then
    [ -n "$SIGN_KEY" ] || die "HW mode needs --sign-key: the enclave signer is MRSIGNER, which owners pin and the key service's database is sealed to"
    [ -s "$SIGN_KEY" ] || die "sign key $SIGN_KEY is missing or empty"
    if [ -f "$OCCLUM_TEMPLATE_KEY" ] && cmp -s "$SIGN_KEY" "$OCCLUM_TEMPLATE_KEY"; then
        die "refusing Occlum's public template key: anyone could sign an enclave with the same MRSIGNER and unseal the key service's database"
    fi
    SIGN_ARGS=(--sign-key "$SIGN_KEY")
elif [ -n "$SIGN_KEY" ]; then
    SIGN_ARGS=(--sign-key "$SIGN_KEY")
fi

# The code that goes into the images: the packages of this checkout, staged at
# $SRC (in the Dockerfiles this checkout already is $SRC).
mkdir -p "$SRC"
for pkg in sesemi app keyservice; do
    [ -d "$REPO/$pkg" ] || die "no package $pkg beside occlum_instance/ ($REPO)"
    if [ "$(cd "$REPO" && pwd -P)" != "$(cd "$SRC" && pwd -P)" ]; then
        rm -rf "${SRC:?}/$pkg"
        cp -r "$REPO/$pkg" "$SRC/$pkg"
    fi
    find "$SRC/$pkg" -name __pycache__ -prune -exec rm -rf {} +
    # Bytecode compiled here, by the image's own Python, so no start compiles the
    # appliance's modules again (docs/performance.md, "Cold start"). checked-hash:
    # a .pyc is used only while the SipHash of its .py matches, so a stale one is
    # recompiled whatever copy_bom or SEFS do to mtimes; no timestamps, so the image
    # stays reproducible. (Forged bytecode is stopped by the measured image, not by
    # this: occlum_instance/checks/bytecode.py.)
    "$PYTHON" -m compileall -q --invalidation-mode checked-hash "$SRC/$pkg"
done
# Files the boms take from this directory (bom/glibc-nss.yaml: etc/nsswitch.conf).
if [ "$(cd "$REPO" && pwd -P)" != "$(cd "$SRC" && pwd -P)" ]; then
    rm -rf "$SRC/occlum_instance/etc" && mkdir -p "$SRC/occlum_instance" && cp -r "$HERE/etc" "$SRC/occlum_instance/etc"
fi

# The key service's build date (SESEMI_BUILD_DATE, measured; its DCAP time floor
# never goes below it): SOURCE_DATE_EPOCH if given (the Dockerfile's build arg),
# else the newest commit's time when this is a git checkout (reproducible), else
# render.py takes the time of the build.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && command -v git >/dev/null; then
    SOURCE_DATE_EPOCH="$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || true)"
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-}"
export PYTHONPATH="$REPO:$SRC:$DEPS"
export PYTHONDONTWRITEBYTECODE=1

if [[ " $APPLIANCES " == *" action "* ]]; then
    [ -n "$PACK" ] || die "the action needs --pack PATH (a sealed pack: sesemi model seal + sesemi pack build)"
    [ -f "$PACK" ] || die "pack $PACK not found"
    # A pack starts with the magic SSMIPACK; anything else (a plaintext .tflite,
    # a sealed single model) must never be baked into an image.
    [ "$(head -c 8 "$PACK")" = "SSMIPACK" ] || die "$PACK is not a sealed SeSeMI model pack (magic SSMIPACK); refusing to put it in the image"
    mkdir -p "$STAGE"
    cp "$PACK" "$STAGE/models.pack"
fi

mkdir -p "$OUT/pkg"

for app in $APPLIANCES; do
    inst="$OUT/${app}_instance"
    echo "== $app: Occlum instance $inst ($MODE, $CONFIG config)"
    rm -rf "$inst" "$OUT/pkg/${app}_instance"
    occlum new "$inst"
    cd "$inst"
    rm -rf image
    copy_bom -f "$HERE/$app.yaml" --root image --include-dir "$HERE/bom"
    render_args=(--appliance "$app" --config "$CONFIG" --out Occlum.json --sizing-out "$OUT/$app.sizing.json")
    [ "$app" = action ] && render_args+=(--pack "$STAGE/models.pack")
    [ "$app" = action ] && [ -n "$KS_URL" ] && render_args+=(--ks-url "$KS_URL")
    [ "$app" = action ] && [ -n "$KS_KEY" ] && render_args+=(--ks-key "$KS_KEY")
    [ "$app" = keyservice ] && [ -n "$PCCS_URL" ] && render_args+=(--pccs-url "$PCCS_URL")
    "$PYTHON" "$HERE/render.py" "${render_args[@]}" "${RENDER_EXTRA[@]}"
    # No --image-key: the image SEFS (code, Python, the sealed pack) is integrity-only,
    # its MAC in the measured config. init then mounts with no key, and every
    # writable SEFS (the root's upper layer, the key service's /data) gets the
    # MRSIGNER auto key. An image key would be passed to all of them instead
    # (Occlum: tools/init/src/main.rs, src/libos/src/fs/fs_ops/mount.rs,
    # src/libos/src/fs/sefs/sgx_storage.rs), and without --buildin-image-key init
    # could not even read it (tools/occlum_build.mk deletes initfs/etc/image_key).
    occlum build "${SIGN_ARGS[@]}"
    occlum package "${PACKAGE_FLAGS[@]}" "${app}_instance.tar.gz"
    tar -xzf "${app}_instance.tar.gz" -C "$OUT/pkg"
    [ -d "$OUT/pkg/${app}_instance" ] || die "occlum package did not produce ${app}_instance"
    mrenclave="$(occlum print mrenclave)"
    mrsigner="$(occlum print mrsigner)"
    printf 'mode=%s\nmrenclave=%s\nmrsigner=%s\n' "$MODE" "$mrenclave" "$mrsigner" > "$OUT/$app.measurement"
    cd "$OUT"
    echo "== $app: mrenclave $mrenclave"
    echo "== $app: mrsigner  $mrsigner"
done

ISV="$("$PYTHON" -c 'import sesemi; print(sesemi.ISV_PROD_ID, sesemi.ISV_SVN)')"
read -r PROD_ID SVN <<<"$ISV"
echo
echo "Pin these (isv_prod_id $PROD_ID, isv_svn $SVN):"
if [ -f "$OUT/keyservice.measurement" ]; then
    # shellcheck disable=SC1090
    ks_mr="$(sed -n 's/^mrenclave=//p' "$OUT/keyservice.measurement")"
    ks_signer="$(sed -n 's/^mrsigner=//p' "$OUT/keyservice.measurement")"
    if [ "$MODE" = HW ]; then
        echo "  sesemi ks attest https://KS-HOST:8443 --expect-mrenclave $ks_mr --expect-mrsigner $ks_signer"
    else
        echo "  (SIM: the key service reports a simulated measurement; attest with --insecure-sim)"
    fi
fi
if [[ " $APPLIANCES " == *" action "* ]]; then
    act_mr="$(sed -n 's/^mrenclave=//p' "$OUT/action.measurement")"
    act_signer="$(sed -n 's/^mrsigner=//p' "$OUT/action.measurement")"
    if [ "$MODE" = HW ]; then
        echo "  sesemi model publish MODEL --as OWNER --allow-mrenclave $act_mr --isv-prod-id $PROD_ID --min-isv-svn $SVN"
        echo "    (or --allow-mrsigner $act_signer to accept every enclave this key signs)"
    else
        sim_mr="$("$PYTHON" "$HERE/render.py" --appliance action --config dev --pack "$STAGE/models.pack" \
                  --out /dev/null --print-sim-mrenclave "${RENDER_EXTRA[@]}" 2>/dev/null)"
        echo "  SIM mode: the action runs tee=sim and reports the simulated mrenclave $sim_mr"
        echo "  sesemi model publish MODEL --as OWNER --allow-mrenclave $sim_mr   (key service with --insecure-sim-attestation)"
    fi
fi
