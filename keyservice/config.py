from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sesemi.errors import SesemiError

from sesemi import build_stamp


@dataclass(frozen=True)
class KeyServiceConfig:
    db_path: Path | None = None      # the SQLite file, unless db_url names a PostgreSQL database
    insecure_sim_attestation: bool = False
    tee: str = "sim"                 # how the service attests ITSELF
    # Where DCAP collateral comes from (file wins); neither: sgx-dcap evidence is refused.
    pccs_url: str | None = None
    collateral_file: Path | None = None
    min_tcb_eval: int = 0            # refuse collateral with a lower tcbEvaluationDataNumber
    token_ttl_s: int = 600           # enclave attestation tokens
    # Stated (signed) in every release: an action serves at most this many requests
    # with a released key, whatever its clock (the host's) says about the TTL.
    release_max_requests: int = 10_000
    nonce_ttl_s: int = 60            # attestation nonces: single use, short-lived
    max_body_bytes: int = 1 << 20
    # What callers without a credential may make the service keep (docs/keyservice.md, "Bounds").
    max_outstanding_nonces: int = 10_000   # att_nonces rows (each lives nonce_ttl_s)
    max_live_tokens: int = 50_000          # tokens rows (each lives token_ttl_s)
    max_tokens_per_measurement: int = 10_000  # of those, earned by one measurement (keyservice/token_quota.py)
    nonces_per_address: tuple[float, int] = (20.0, 200)        # per second, burst
    registrations_per_address: tuple[float, int] = (1.0, 100)  # per second, burst
    proofs_per_address: tuple[float, int] = (20.0, 200)        # anonymous log proofs: per second, burst
    # Signed calls per principal: a burst suited to scripts, then 5 a second.
    calls_per_principal: tuple[float, int] = (5.0, 60)
    writes_per_address: tuple[float, int] = (20.0, 600)   # signed writes (each appends leaves), per address
    release_refusal_leaves: tuple[float, int] = (5.0, 50)  # refused releases logged one leaf each; beyond, counted
    max_commit_batch: int = 256      # log entries one group commit takes at most
    # An answer reflects every write committed this long before its request (other
    # replicas' too) and every write its caller has seen (docs/keyservice.md).
    follow_max_age_s: float = 0.02
    max_tracked_principals: int = 100_000  # buckets kept, least recently used forgotten first
    refusal_window_s: float = 60.0         # anonymous refusals: one audit row per check per window
    db_url: str | None = None        # postgresql://...: replicas over one database (store_pg.py)
    secrets_file: Path | None = None  # default: next to the SQLite file
    pool_size: int = 10              # PostgreSQL connections
    peers: tuple[str, ...] = ()      # other replicas' URLs: they exchange state versions (cluster.py)
    cluster_policy: str | None = None  # canonical JSON of the EnclavePolicy a joining replica must meet
    # When this service was built: the DCAP time floor is never below it (sesemi/build_stamp.py).
    build_date: float = field(default_factory=build_stamp.release_date)
    # Accept X25519-only boxes and enclave keys (uploads, releases): no post-quantum
    # protection for them (docs/protocol.md, "HPKE"). Measured when on.
    insecure_allow_classical_kem: bool = False

    @classmethod
    def for_database(cls, db: str | Path, **fields: Any) -> KeyServiceConfig:
        """`db`: a SQLite file, or a postgresql:// URL (replicas over one database;
        then `secrets_file` is required: no file sits next to a URL)."""
        db = str(db)
        if db.startswith(("postgresql://", "postgres://")):
            if not fields.get("secrets_file"):
                raise SesemiError("--secrets FILE is required with a PostgreSQL database (where this replica "
                                  "keeps the service's identity; on SGX, a sealed SEFS path)")
            return cls(db_url=db, **fields)
        return cls(db_path=Path(db), **fields)

    @property
    def db(self) -> str:
        return self.db_url or str(self.db_path)

    @property
    def secrets_path(self) -> Path:
        if self.secrets_file is not None:
            return self.secrets_file
        if self.db_path is None:
            raise SesemiError("a PostgreSQL key service needs its secrets file named (--secrets FILE)")
        return self.db_path.with_name(self.db_path.name + ".secrets")

    def trusted(self) -> dict:
        """The settings that change what the service releases: measured in sim."""
        return {"insecure_sim_attestation": self.insecure_sim_attestation,
                "token_ttl_s": self.token_ttl_s, "nonce_ttl_s": self.nonce_ttl_s,
                "min_tcb_eval": self.min_tcb_eval, "release_max_requests": self.release_max_requests,
                "build_date": build_stamp.stamp(self.build_date),
                **({"cluster_policy": self.cluster_policy} if self.cluster_policy else {}),
                **({"insecure_allow_classical_kem": True} if self.insecure_allow_classical_kem else {})}
