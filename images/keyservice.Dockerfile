# syntax=docker/dockerfile:1.4
# The SeSeMI key service as an Occlum appliance: `python3 -m keyservice` (waitress,
# one process, threads) inside an SGX enclave under `occlum run`, on port 8443.
# Its database lives on a SEFS that the LibOS seals with the MRSIGNER auto key (the
# image is integrity-only, so no image key replaces it): the host only ever holds
# ciphertext in the volume /var/lib/sesemi-ks, and only enclaves signed with the
# same key can open it again, after a restart or an upgrade.
# Build context: the repository root.
#
#   production (SGX hardware; the default target):
#     DOCKER_BUILDKIT=1 docker build -f images/keyservice.Dockerfile \
#         --secret id=sign_key,src=enclave-signing-key.pem [--build-arg PCCS_URL=https://pccs:8081/sgx/certification/v4/] \
#         -t REGISTRY/sesemi-keyservice:0.1.0 .
#   Occlum SIM mode (accepts sim evidence; never production): --build-arg SGX_MODE=SIM --target keyservice-sim
#
# docs/deploy.md walks through building, starting and pinning it.

ARG OCCLUM_IMAGE=occlum/occlum:0.30.1-ubuntu20.04
ARG RUNTIME_BASE=ubuntu:20.04

FROM scratch AS wheels

# CPython for the enclave (see images/action.Dockerfile: same stage, same cache).
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

FROM ${OCCLUM_IMAGE} AS builder
ARG SGX_MODE=HW
ARG PCCS_URL=""
ARG RENDER_OPTIONS=""
# The build's date, stamped into the measured env.default (SESEMI_BUILD_DATE): the
# DCAP time floor never goes below it. Reproducible: --build-arg
# SOURCE_DATE_EPOCH=$(git log -1 --format=%ct); unset, the time of the build.
ARG SOURCE_DATE_EPOCH=""
COPY --from=python /opt/python-occlum /opt/python-occlum
COPY --from=deps /opt/sesemi-deps /opt/sesemi-deps
COPY sesemi /opt/sesemi/src/sesemi
COPY app /opt/sesemi/src/app
COPY keyservice /opt/sesemi/src/keyservice
COPY occlum_instance /opt/sesemi/src/occlum_instance
RUN --mount=type=secret,id=sign_key,required=false \
    set -e; sign=""; \
    if [ -s /run/secrets/sign_key ]; then sign="--sign-key /run/secrets/sign_key"; fi; \
    pccs=""; if [ -n "${PCCS_URL}" ]; then pccs="--pccs-url ${PCCS_URL}"; fi; \
    /opt/sesemi/src/occlum_instance/build.sh --mode "${SGX_MODE}" --appliance keyservice $sign $pccs \
        -- ${RENDER_OPTIONS}

# Occlum SIM mode: debuggable dev config; accepts SIMULATED evidence. Never production.
FROM builder AS keyservice-sim
ENV SGX_MODE=SIM
COPY --chmod=0755 images/occlum-entry.sh /usr/local/bin/sesemi-occlum-entry
VOLUME /var/lib/sesemi-ks
WORKDIR /opt/sesemi/out/keyservice_instance
EXPOSE 8443
# The entry creates /data's SEFS source on the volume first (images/occlum-entry.sh).
ENTRYPOINT ["/usr/local/bin/sesemi-occlum-entry", "/var/lib/sesemi-ks/sefs", "--", \
            "/opt/occlum/build/bin/occlum", "run", "/bin/python3", "-m", "keyservice"]

# Production runtime: SGX PSW + DCAP libraries, the Occlum runtime, the packaged
# instance. Mount a volume at /var/lib/sesemi-ks (the sealed database) and the
# host's /etc/sgx_default_qcnl.conf; pass /dev/sgx_enclave and /dev/sgx_provision.
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
COPY --from=builder /opt/sesemi/out/pkg/keyservice_instance /srv/sesemi/keyservice_instance
COPY --from=builder /opt/sesemi/out/keyservice.measurement /opt/sesemi/out/keyservice.sizing.json /srv/sesemi/
# Fail the image build, not the first start, if the PAL misses a library.
RUN set -e; lib=/srv/sesemi/keyservice_instance/build/lib; \
    LD_LIBRARY_PATH="$lib" ldd "$lib/libocclum-pal.so" /srv/sesemi/keyservice_instance/build/bin/occlum-run > /tmp/ldd.txt; \
    if grep 'not found' /tmp/ldd.txt; then echo "libocclum-pal.so: missing libraries" >&2; exit 1; fi; \
    rm /tmp/ldd.txt
COPY --chmod=0755 images/occlum-entry.sh /usr/local/bin/sesemi-occlum-entry
VOLUME /var/lib/sesemi-ks
ENV PATH=/opt/occlum/build/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /srv/sesemi/keyservice_instance
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/sesemi-occlum-entry", "/var/lib/sesemi-ks/sefs", "--", \
            "/opt/occlum/build/bin/occlum", "run", "/bin/python3", "-m", "keyservice"]
