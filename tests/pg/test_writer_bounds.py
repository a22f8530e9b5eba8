"""The PostgreSQL writer's waits are bounded: a lock the host (or a stuck peer)
holds for ever makes a write fail as StoreUnavailable, never hang a group
commit's leader and, behind it, every release."""

from __future__ import annotations

import time

import psycopg
import pytest

from keyservice import store_pg
from sesemi.errors import StoreUnavailable

from .conftest import make_db


def test_a_writer_lock_held_for_ever_is_a_bounded_refusal(tmp_path, pg, monkeypatch):
    db = make_db("pg", tmp_path, pg)
    ks = db.service()
    monkeypatch.setattr(store_pg, "WRITE_WAIT_S", 1)
    with psycopg.connect(db.config.db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (store_pg.WRITE_LOCK,))
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            ks.log_writer.append({"ts": 1.0, "event": "release", "outcome": "ok"})
        assert time.monotonic() - t0 < 10
        holder.execute("SELECT pg_advisory_unlock(%s)", (store_pg.WRITE_LOCK,))
    assert ks.log_writer.append({"ts": 1.0, "event": "release", "outcome": "ok"}) > 0  # not wedged
