"""A single-node key service (SQLite) whose database the host copies while a
user is granted, restores after the owner revoked, restarts, and pads past
every witness's tree size. No replica remembers; the witnesses do, and
padding does not help: the owner's CLI and a running action demand a
consistency proof from the checkpoint they hold, which the restored log
cannot give (docs/keyservice.md, "The log")."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest

from bundle_tool.testing.world import LocalWorld
from bundle_tool.testing.processes import start_keyservice
from sesemi.client import ActionClient, KeyServiceClient, attest_key_service
from sesemi.errors import SesemiError
from sesemi.identity import Identity

from ..conftest import DIGITS
from ..e2e.test_cli import sesemi


def _backup(src_path, dst_path) -> None:
    with sqlite3.connect(src_path) as src, sqlite3.connect(dst_path) as dst:
        src.backup(dst)


def _infer(action, world, x):
    return ActionClient(action.url).infer("digits", world.user.principal_id, world.request_keys["digits"],
                                          {"image": x})


def test_restored_and_padded_database_is_caught_by_owner_cli_and_action(tmp_path):
    world = LocalWorld.start(tmp_path / "w")
    port = int(world.ks_server.url.rsplit(":", 1)[1])
    db = tmp_path / "w" / "ks" / "ks.db"
    owner_home = tmp_path / "owner"
    x = np.zeros((1, 8, 8, 1), np.float32)
    try:
        pack = world.deploy_pack("main", {"digits": DIGITS}, key_ttl_s=1.0)
        action = world.action(pack, extra=["--key-ttl", "1"])
        _infer(action, world, x)                                        # served
        sesemi(owner_home, "ks", "attest", world.ks_server.url, "--insecure-sim")
        sesemi(owner_home, "identity", "new", "carol")
        sesemi(owner_home, "ks", "register", "--as", "carol")
        carol = sesemi(owner_home, "identity", "show", "carol").stdout.strip()
        world.ks.grant(world.owner, "digits", carol)
        _backup(db, tmp_path / "backup.db")                             # 1. the host's copy: user granted
        world.ks.revoke(world.owner, "digits", world.user.principal_id)  # 2. the owner revokes...
        sesemi(owner_home, "ks", "log", "checkpoint")                   # ...a CLI witness sees the new state
        time.sleep(1.2)                                                 # the action's key TTL
        with pytest.raises(SesemiError):
            _infer(action, world, x)                                    # refused: the action saw the revoke
        witnessed = world.ks.checkpoint()[0].size
    finally:
        world.ks_server.stop()
    _backup(tmp_path / "backup.db", db)                                 # 3. restore, restart
    world.ks_server = start_keyservice(tmp_path / "w", port=port)
    world.servers.append(world.ks_server)
    try:
        # 4. The restored log is smaller than what the witnesses hold: refused.
        owner_size = json.loads(open(owner_home / "ks_state.json").read())
        owner_size = next(iter(owner_size.values()))["checkpoint"].split("\n")[1]
        p = sesemi(owner_home, "ks", "log", "checkpoint", ok=False)
        assert p.returncode != 0 and "older than the checkpoint this client holds" in p.stderr, p.stderr
        # 5. Padded to exactly the owner's size (a signed write of a registered
        # principal appends one leaf, its sequence number): same size, another root.
        fresh = KeyServiceClient(attest_key_service(world.ks_server.url, insecure_sim=True))
        mallory = Identity.generate("mallory")
        fresh.register(mallory)
        while fresh.checkpoint()[0].size < int(owner_size):
            fresh.register(mallory)
        assert fresh.checkpoint()[0].size == int(owner_size)
        p = sesemi(owner_home, "ks", "log", "checkpoint", ok=False)
        assert p.returncode != 0 and "same size, another root" in p.stderr, p.stderr
        # 6. Padded past every witness with self-registered principals.
        for i in range(12):
            fresh.register(Identity.generate(f"mallory{i}"))
        assert fresh.checkpoint()[0].size > witnessed + 5
        p = sesemi(owner_home, "ks", "log", "checkpoint", ok=False)
        err = p.stderr.strip()
        assert p.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in p.stderr
        assert "does not extend the checkpoint this client holds" in err and "size" in err, err
        p = sesemi(owner_home, "ks", "audit", "--as", "carol", ok=False)
        assert p.returncode != 0 and "does not extend" in p.stderr
        # The running action refuses the forked log: the revoked user is not served.
        time.sleep(1.2)
        with pytest.raises(SesemiError):
            _infer(action, world, x)
        assert "does not extend" in action.log_text()
    finally:
        world.stop()


def test_the_receipts_and_log_commands_verify(tmp_path):
    """`ks receipt verify` checks a write's receipt offline; `ks log prove` and
    `monitor` speak the same proofs; `keyservice verify` checks it all."""
    world = LocalWorld.start(tmp_path / "w")
    home = tmp_path / "owner"
    try:
        sesemi(home, "ks", "attest", world.ks_server.url, "--insecure-sim")
        sesemi(home, "identity", "new", "alice")
        sesemi(home, "ks", "register", "--as", "alice")
        sealed = tmp_path / "m.sealed"
        sesemi(home, "model", "seal", str(DIGITS), "--model-id", "m", "--out", str(sealed))
        sesemi(home, "model", "publish", "m", "--as", "alice", "--allow-mrenclave", "ab" * 32)
        out = sesemi(home, "--json", "grant", "m", world.user.principal_id, "--as", "alice").stdout
        import json

        receipt = json.loads(out)["receipt"]
        ok = sesemi(home, "ks", "receipt", "verify", receipt).stdout
        assert ok.startswith("ok: leaf") and "grant m" in ok
        doc = json.loads(open(receipt).read())
        doc["entry"]["user_id"] = "00" * 32                              # another user: not in the log
        forged = tmp_path / "forged.json"
        forged.write_text(json.dumps(doc))
        p = sesemi(home, "ks", "receipt", "verify", str(forged), ok=False)
        assert p.returncode != 0 and "not in the signed checkpoint" in p.stderr
        size = json.loads(sesemi(home, "--json", "ks", "log", "checkpoint").stdout)["size"]
        proof = json.loads(sesemi(home, "--json", "ks", "log", "prove", "--from", "2").stdout)
        assert proof["second"] == size and proof["proof"]
        mon = sesemi(home, "ks", "log", "monitor", "--count", "2", "--interval", "0.1").stdout
        assert mon.count("consistent") >= 2
        assert "--verify" and "log verified" in sesemi(home, "ks", "audit", "--as", "alice", "--verify").stdout
    finally:
        world.stop()
    ok = sesemi(None, "keyservice", "verify", "--db", str(tmp_path / "w" / "ks" / "ks.db")).stdout
    assert ok.startswith("ok: log of")


def test_a_replica_on_a_forked_database_refuses_a_peer_whose_log_does_not_extend_its_own(tmp_path):
    """Two replicas of one identity on two databases that share a past and then
    diverge (the host runs a fork): the peer check relates their checkpoints by
    a consistency proof, not by comparing sizes, and the replica refuses."""
    import shutil

    from bundle_tool.testing.processes import free_port, start

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = start_keyservice(a_dir)
    try:
        fresh = KeyServiceClient(attest_key_service(a.url, insecure_sim=True))
        fresh.register(Identity.generate("shared-past"))
        _backup(a_dir / "ks" / "ks.db", tmp_path / "copy.db")
        (b_dir / "ks").mkdir(parents=True)
        shutil.copy(a_dir / "ks" / "ks.db.secrets", b_dir / "ks" / "ks.db.secrets")
        _backup(tmp_path / "copy.db", b_dir / "ks" / "ks.db")
        for i in range(6):                                    # A's history goes on...
            fresh.register(Identity.generate(f"a{i}"))
        b = start_keyservice(b_dir)                           # ...and B's copy another way
        try:
            other = KeyServiceClient(attest_key_service(b.url, insecure_sim=True))
            for i in range(2):
                other.register(Identity.generate(f"b{i}"))
        finally:
            b.stop()
        port = free_port()
        args = ["keyservice", "serve", "--db", str(b_dir / "ks" / "ks.db"), "--port", str(port),
                "--insecure-sim-attestation", "--peer", a.url]
        with pytest.raises(RuntimeError, match="exited") as info:
            start("keyservice-b", args, port, b_dir / "logs", "/healthz")
        assert "serves another history" in str(info.value) and "forked" in str(info.value)
    finally:
        a.stop()
