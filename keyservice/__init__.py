"""The SeSeMI key service: attestation verification, policy, sealed key storage."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from sesemi.errors import SesemiError

from sesemi import logsafe

from .api import create_app
from .config import KeyServiceConfig
from . import serving
from .cluster import PeerWatch, join_cluster
from .service import KeyService
from .serving import ServingLimits

__all__ = ["create_app", "KeyService", "KeyServiceConfig", "serve", "verify_database"]


def verify_database(db: str, secrets_file: str | Path | None = None) -> dict:
    """The operator's full check, in its own process (it never holds a lock a
    serving replica needs): every leaf of the log from the start (index, hash,
    MAC), every stored node rebuilt, every sealed row against the newest version
    the log records. Raises IntegrityError at the first fault."""
    from .sealing import ServiceSecrets
    from .store import open_store
    from .store_seal import Sealer

    is_url = db.startswith(("postgresql://", "postgres://"))
    path = Path(secrets_file) if secrets_file else (None if is_url else Path(db).with_name(Path(db).name + ".secrets"))
    if path is None or not path.exists():
        raise SesemiError("--secrets FILE: the service identity is needed to check the log's MACs")
    store = open_store(db)
    try:
        store.sealer = Sealer(ServiceSecrets.load_or_create(path).storage_key)
        head = store.verify_log()
        rows = store.verify_rows(store.checked_versions)
    finally:
        store.close()
    return {"tree_size": head.size, "root": head.root.hex(), "rows": rows}


def _every(period_s: float, fn: Callable[[], object], log: logging.Logger) -> None:
    """Run `fn` every period on a daemon thread; a failure is logged, not fatal."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(period_s)
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the timer must survive a bad round
                log.error("maintenance failed: %s", type(exc).__name__)

    threading.Thread(target=loop, name="ks-maintenance", daemon=True).start()


def serve(config: KeyServiceConfig, *, host: str = "127.0.0.1", port: int = 8443, threads: int = 8,
          join_url: str | None = None, limits: ServingLimits | None = None) -> None:
    """Run the key service in ONE process with threads (Occlum has no fork).

    `config`: what it is (KeyServiceConfig.for_database: a SQLite file, or a
    postgresql:// URL for replicas over one database). `join_url`: a running
    replica to receive the service's identity from, by attestation
    (cluster.py); `config.peers`: replicas whose checkpoints it relates to its own.

    DCAP collateral: `config.collateral_file`, else `config.pccs_url`, else the
    URL in /etc/sgx_default_qcnl.conf if present; with none, sgx-dcap evidence
    is refused."""
    from dataclasses import replace

    from sesemi import hpke_box
    from sesemi.attestation.dcap import QCNL_CONF, pccs_url_from_qcnl

    hpke_box.check_backend()  # before anything is opened: one line naming a missing primitive
    logsafe.configure("keyservice")  # one line per record, control characters escaped
    log = logging.getLogger("sesemi.keyservice")
    if not config.collateral_file and not config.pccs_url:
        pccs_url = pccs_url_from_qcnl()
        if pccs_url:
            config = replace(config, pccs_url=pccs_url)
            log.info("DCAP collateral from the PCCS named in %s", QCNL_CONF)
    config = replace(config, pool_size=2 * threads + 2)  # a transaction and a read per thread
    joined = None
    if join_url:
        joined = join_cluster(config, join_url)
        log.info("joined the key service at %s by attestation: identity received", join_url)
    ks = KeyService(config, secrets_=joined)
    watch = None
    if config.peers:
        watch = PeerWatch(ks.store, ks.signing_public, config.peers)
        watch.poll_once()
        ks.store.sync()  # a database behind a live peer: refuse before serving anything
        watch.start()

    def listening() -> None:
        # Said once the port is ours: a taken port is one clear error, not a
        # "key service on ..." line followed by a failure.
        if not ks.verifier.accepts_dcap:
            log.warning("no DCAP collateral source (--pccs-url / --collateral-file): sgx-dcap evidence is refused")
        if ks.tee.simulated:
            log.warning("INSECURE SIMULATION: this key service attests itself with sim evidence "
                        "(not hardware-backed); its secrets file %s is protected by file mode only",
                        Path(config.secrets_path).name)
        if config.insecure_sim_attestation:
            log.warning("INSECURE: --insecure-sim-attestation is on: enclaves presenting SIMULATED "
                        "evidence will receive keys")
        if config.insecure_allow_classical_kem:
            log.warning("INSECURE: --insecure-allow-classical-kem is on: X25519-only uploads and releases are "
                        "accepted; keys in them are NOT protected against recorded traffic decrypted later")
        if ks.secrets.kem_upgraded:
            log.warning("the secrets file held an X25519-only HPKE key: replaced by a hybrid %s key (stored "
                        "keys unchanged); clients must run `sesemi ks attest` again", hpke_box.HYBRID)
        log.info("key service on %s:%d, mrenclave(%s)=%s, hpke key=%s id %s", host, port, ks.tee.name,
                 ks.mrenclave, hpke_box.HYBRID, ks.audience)

    ks.maintenance()
    _every(30.0, ks.maintenance, log)
    # Two threads are kept for calls with a credential (signed calls, key fetches).
    serving.serve(create_app(ks, anonymous_slots=max(1, threads - 2)), host=host, port=port, threads=threads,
                  ident="sesemi-keyservice",
                  limits=limits or ServingLimits(max_body_bytes=config.max_body_bytes), on_listening=listening)
