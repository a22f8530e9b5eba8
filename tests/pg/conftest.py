"""A real PostgreSQL server for this package's tests (tests/pg/server.py), and
a key-service world over either backend."""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyservice.config import KeyServiceConfig
from keyservice.service import KeyService
from sesemi import hpke_box
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64e
from sesemi.identity import Identity

from bundle_tool.testing import postgres as server

MR = "ab" * 32
SEAL = "5e" * 16
_names = itertools.count()


@pytest.fixture(scope="session")
def pg():
    # Not a skip: a machine without PostgreSQL must not pass these silently (.ci/run installs it).
    srv = server.start()
    yield srv
    srv.stop()


@dataclass
class Db:
    """One key-service database on one backend, and raw access to it (the host's)."""

    backend: str
    config: KeyServiceConfig
    pg: Any = None
    name: str = ""

    @property
    def url(self) -> str:
        return self.config.db

    @property
    def secrets(self) -> Path:
        return self.config.secrets_path

    def service(self, **kw) -> KeyService:
        return KeyService(self.config, **kw)

    def snapshot(self, out: Path) -> None:
        """SQLite: a consistent copy of the database (what a host's backup holds)."""
        with sqlite3.connect(self.config.db_path) as src, sqlite3.connect(out) as dst:
            src.backup(dst)

    def restore(self, snap: Path) -> None:
        with sqlite3.connect(snap) as src, sqlite3.connect(self.config.db_path) as dst:
            src.backup(dst)

    def sql(self, statement: str, args: tuple = ()) -> list:
        if self.backend == "sqlite":
            con = sqlite3.connect(self.config.db_path, isolation_level=None)
            try:
                return con.execute(statement, args).fetchall()
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.config.db_url, autocommit=True) as con:
            cur = con.execute(statement.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []


def make_db(backend: str, tmp_path: Path, pg_server=None) -> Db:
    if backend == "sqlite":
        return Db("sqlite", KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True))
    name = f"ks{next(_names)}_{tmp_path.name[-12:].lower().replace('-', '_')}"
    url = pg_server.create_db(name)
    return Db("pg", KeyServiceConfig(db_url=url,
                                     secrets_file=tmp_path / "ks.secrets", insecure_sim_attestation=True,
                                     pool_size=4), pg_server, name)


@pytest.fixture(params=["sqlite", "pg"])
def db(request, tmp_path):
    pg_server = request.getfixturevalue("pg") if request.param == "pg" else None
    return make_db(request.param, tmp_path, pg_server)


@dataclass
class Flow:
    """Owner, user, a model granted and enrolled, and an enclave session, in-process."""

    ks: KeyService
    owner: Identity
    user: Identity
    model_id: str = "m"

    def token(self) -> str:
        pub = hpke_box.public_raw(hpke_box.new_private_key())
        nonce = bytes.fromhex(self.ks.new_enclave_nonce()["nonce"])
        ev = SimBackend(MR).evidence(report_data_binding(nonce, pub))
        return self.ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]

    def release(self, ks: KeyService | None = None) -> dict:
        ks = ks or self.ks
        return ks.release_keys(self.token(), {"model_id": self.model_id, "user_id": self.user.principal_id,
                                              "seal_id": SEAL})


def setup_flow(ks: KeyService, model_id: str = "m") -> Flow:
    owner, user = Identity.generate("o"), Identity.generate("u")
    for i in (owner, user):
        ks.register_principal(i.public_raw)
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", model_id, owner.principal_id, SEAL))
    ks.put_model(owner.principal_id, model_id, {"wrapped_key": b64e(box), "policy": {"mrenclave": [MR]},
                                                "seal_id": SEAL})
    ks.grant(owner.principal_id, model_id, user.principal_id)
    rbox = hpke_box.seal(b"r" * 32, ks.hpke_public, hpke_box.info("request-key", model_id, user.principal_id))
    ks.put_request_key(user.principal_id, model_id, {"wrapped_key": b64e(rbox)})
    return Flow(ks, owner, user, model_id)
