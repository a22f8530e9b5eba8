# syntax=docker/dockerfile:1.4
# The SeSeMI inference action as an OpenWhisk blackbox Docker action: the action
# server (`python3 -m app`: one process, threads) runs inside an SGX enclave under
# `occlum run` and speaks OpenWhisk's /init and /run on port 8080 itself, so the
# protocol passes through unchanged. Build context: the repository root.
#
#   production (SGX hardware, signed with your key; the default target):
#     DOCKER_BUILDKIT=1 docker build -f images/action.Dockerfile \
#         --build-arg PACK=build/main.pack --secret id=sign_key,src=enclave-signing-key.pem \
#         -t REGISTRY/sesemi-action:0.1.0 .
#   Occlum SIM mode (no SGX needed; debuggable; tee=sim):   --build-arg SGX_MODE=SIM --target action-sim
#   without Occlum (development and the container test):     --target plain
#
# docs/deploy.md walks through building, measuring, pinning and deploying.

ARG OCCLUM_IMAGE=occlum/occlum:0.30.1-ubuntu20.04
ARG RUNTIME_BASE=ubuntu:20.04
ARG PLAIN_BASE=python:3.11-slim-bookworm

# A local wheelhouse for offline builds: `--build-context wheels=DIR` replaces this empty stage.
FROM scratch AS wheels

# ---------------------------------------------------------------------------
# CPython for the enclave, built from source against Ubuntu 20.04's glibc 2.31
# (the glibc Occlum ships; gcc there makes position-independent executables,
# which Occlum requires). The tarball is checked against its SHA-256.
FROM ${OCCLUM_IMAGE} AS python
ARG PYTHON_VERSION=3.11.14
ARG PYTHON_SHA256=8d3ed8ec5c88c1c95f5e558612a725450d2452813ddad5e58fdb1a53b1209b78
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl xz-utils libssl-dev libffi-dev zlib1g-dev libbz2-dev \
        liblzma-dev libsqlite3-dev uuid-dev && \
    rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/python.tar.xz \
        "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tar.xz" && \
    echo "${PYTHON_SHA256}  /tmp/python.tar.xz" | sha256sum -c - && \
    mkdir /tmp/python && tar -xJf /tmp/python.tar.xz -C /tmp/python --strip-components=1 && \
    cd /tmp/python && \
    ./configure --prefix=/opt/python-occlum --with-ensurepip=install && \
    make -j"$(nproc)" && make install && \
    cd / && rm -rf /tmp/python /tmp/python.tar.xz && \
    /opt/python-occlum/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid'

# Third-party packages, from pyproject.toml's dependencies, into a prefix of
# their own; the copy_bom files pick exactly what the appliance imports.
FROM python AS deps
COPY pyproject.toml /tmp/sesemi/pyproject.toml
RUN --mount=type=bind,from=wheels,target=/wheels \
    /opt/python-occlum/bin/python3 -c 'import tomllib; d = tomllib.load(open("/tmp/sesemi/pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"]))' > /tmp/sesemi/requirements.txt && \
    /opt/python-occlum/bin/python3 -m pip install --no-cache-dir --find-links /wheels --only-binary cryptography \
        --target /opt/sesemi-deps/site-packages -r /tmp/sesemi/requirements.txt
# The hybrid HPKE suite (MLKEM768-X25519) needs ML-KEM in the OpenSSL that
# cryptography links: its wheels carry their own (>= 3.5); a build from source
# would link Ubuntu 20.04's 1.1.1, which has none. So: wheels only, checked here.
RUN PYTHONPATH=/opt/sesemi-deps/site-packages /opt/python-occlum/bin/python3 -c 'from cryptography.hazmat.backends.openssl.backend import backend as b; from cryptography.hazmat.primitives import hpke; hpke.KEM.MLKEM768_X25519; assert b.mlkem_supported(), "no ML-KEM in " + b.openssl_version_text()'

# ---------------------------------------------------------------------------
# The Occlum build: copy_bom, Occlum.json from the sizing rule, `occlum build`
# (integrity-only image SEFS, measured; docs/occlum.md, Sealing), `occlum package`.
# The sealed pack is the only model material that enters, and only this stage,
# and only into the measured image. The signing key is a build secret: it never
# lands in a layer.
FROM ${OCCLUM_IMAGE} AS builder
ARG SGX_MODE=HW
ARG PACK=build/main.pack
ARG RENDER_OPTIONS=""
ARG KS_URL=""
COPY --from=python /opt/python-occlum /opt/python-occlum
COPY --from=deps /opt/sesemi-deps /opt/sesemi-deps
COPY sesemi /opt/sesemi/src/sesemi
COPY app /opt/sesemi/src/app
COPY keyservice /opt/sesemi/src/keyservice
COPY occlum_instance /opt/sesemi/src/occlum_instance
COPY ${PACK} /opt/sesemi/input/models.pack
RUN --mount=type=secret,id=sign_key,required=false \
    set -e; sign=""; \
    if [ -s /run/secrets/sign_key ]; then sign="--sign-key /run/secrets/sign_key"; fi; \
    ks=""; if [ -n "${KS_URL}" ]; then ks="--ks-url ${KS_URL}"; fi; \
    /opt/sesemi/src/occlum_instance/build.sh --mode "${SGX_MODE}" --appliance action \
        --pack /opt/sesemi/input/models.pack $sign $ks -- ${RENDER_OPTIONS} && \
    rm -f /opt/sesemi/input/models.pack

# ---------------------------------------------------------------------------
# Occlum SIM mode (ci/occlum-sim.sh): runs in the builder, which has the SGX SDK's
# simulation libraries. Debuggable dev config, sim evidence: never production.
FROM builder AS action-sim
ENV SGX_MODE=SIM
WORKDIR /opt/sesemi/out/action_instance
EXPOSE 8080
ENTRYPOINT ["/opt/occlum/build/bin/occlum", "run", "/bin/python3", "-m", "app"]

# ---------------------------------------------------------------------------
# Without Occlum: the same action as a plain process (tee=sim). For development
# and the container test (`make image-test`); it holds no model: the pack is
# mounted and named by SESEMI_PACK in /init's value.env.
FROM ${PLAIN_BASE} AS plain-deps
COPY pyproject.toml /tmp/sesemi/pyproject.toml
RUN ["python3", "-c", "import tomllib; d = tomllib.load(open('/tmp/sesemi/pyproject.toml', 'rb')); open('/tmp/sesemi/requirements.txt', 'w').write('\\n'.join(d['project']['dependencies']))"]
RUN ["python3", "-m", "pip", "install", "--no-cache-dir", "--only-binary", "cryptography", "--target", "/opt/sesemi/site-packages", "-r", "/tmp/sesemi/requirements.txt"]
# ML-KEM for the hybrid HPKE suite, from the wheel's own OpenSSL (as in the deps stage).
RUN ["env", "PYTHONPATH=/opt/sesemi/site-packages", "python3", "-c", "from cryptography.hazmat.backends.openssl.backend import backend as b; from cryptography.hazmat.primitives import hpke; hpke.KEM.MLKEM768_X25519; assert b.mlkem_supported(), 'no ML-KEM in ' + b.openssl_version_text()"]

FROM ${PLAIN_BASE} AS plain
COPY --from=plain-deps /opt/sesemi/site-packages /opt/sesemi/site-packages
COPY sesemi /opt/sesemi/lib/sesemi
COPY app /opt/sesemi/lib/app
# checked-hash .pyc, as build.sh does for the Occlum images: no start compiles
# the action's modules, and a .pyc is used only while its .py matches.
RUN ["python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", "/opt/sesemi/lib"]
ENV PYTHONPATH=/opt/sesemi/lib:/opt/sesemi/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    SESEMI_TEE=sim \
    SESEMI_HOST=0.0.0.0 \
    SESEMI_PORT=8080
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "app"]

# ---------------------------------------------------------------------------
# Production runtime: Intel's SGX PSW and DCAP quote libraries (in-process
# quoting: no aesmd), the Occlum runtime, and the packaged instance; nothing
# else. The invoker passes /dev/sgx_enclave and /dev/sgx_provision and mounts
# /etc/sgx_default_qcnl.conf (the PCCS) - see docs/deploy.md.
FROM ${RUNTIME_BASE} AS runtime
# As Occlum's runtime image does (tools/docker/Dockerfile.ubuntu20.04-rt): first
# ca-certificates (the base image has no CA bundle, so apt could not verify an
# https source) and jq (tools/occlum exports OCCLUM_RELEASE_ENCLAVE=1 only when
# `jq .metadata.debuggable` says false; without jq the PAL creates a debug
# enclave, which an enclave signed with DisableDebug refuses), then Intel's SGX
# source exactly as the Occlum image has it configured, then the SGX packages.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates jq && \
    rm -rf /var/lib/apt/lists/*
COPY --from=builder /etc/apt/sources.list.d/intel-sgx.list /etc/apt/sources.list.d/intel-sgx.list
COPY --from=builder /etc/apt/trusted.gpg /etc/apt/trusted.gpg
# The HW PAL links -lsgx_dcap_ql -lsgx_dcap_quoteverify (src/pal/Makefile), and
# verification loads the QvE: libsgx-dcap-quote-verify and libsgx-ae-qve.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libsgx-urts libsgx-enclave-common libsgx-uae-service libsgx-dcap-ql libsgx-dcap-quote-verify \
        libsgx-ae-qve libsgx-dcap-default-qpl libsgx-quote-ex libsgx-ae-qe3 libsgx-ae-pce \
        libsgx-ae-id-enclave libsgx-pce-logic libsgx-qe3-logic && \
    rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/occlum/build/bin /opt/occlum/build/bin
COPY --from=builder /opt/sesemi/out/pkg/action_instance /srv/sesemi/action_instance
COPY --from=builder /opt/sesemi/out/action.measurement /opt/sesemi/out/action.sizing.json /srv/sesemi/
# Fail the image build, not the first start, if the PAL misses a library.
RUN set -e; lib=/srv/sesemi/action_instance/build/lib; \
    LD_LIBRARY_PATH="$lib" ldd "$lib/libocclum-pal.so" /srv/sesemi/action_instance/build/bin/occlum-run > /tmp/ldd.txt; \
    if grep 'not found' /tmp/ldd.txt; then echo "libocclum-pal.so: missing libraries" >&2; exit 1; fi; \
    rm /tmp/ldd.txt
ENV PATH=/opt/occlum/build/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /srv/sesemi/action_instance
EXPOSE 8080
ENTRYPOINT ["/opt/occlum/build/bin/occlum", "run", "/bin/python3", "-m", "app"]
