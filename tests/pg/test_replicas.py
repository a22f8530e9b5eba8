"""Three key-service replicas over one real PostgreSQL database, as
processes: one identity (B and C join A by attestation), the demo flow
through any replica, revocation seen across replicas, failover of the SDK,
the CLI and an action, SIGKILL of the replica in use mid-stream with no
acknowledged write lost, a replica refused at join, and a restarted replica
that finds the database behind a live peer."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

import numpy as np
import pytest

from bundle_tool.home import Home
from bundle_tool.testing.world import mrenclave_for
from bundle_tool.testing.processes import free_port, start, start_action
from sesemi import sealed_model
from sesemi.client import ActionClient, EnclaveKeyClient, KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.errors import AccessDenied
from sesemi.pack import build as build_pack
from sesemi.policy import EnclavePolicy

from ..conftest import DIGITS, HELDOUT
from ..e2e.test_cli import sesemi


def start_replica(work: Path, name: str, db_url: str, *, port: int | None = None, join: str | None = None,
                  peers: tuple[str, ...] = (), extra: tuple[str, ...] = ()):
    port = port or free_port()
    args = ["keyservice", "serve", "--db", db_url, "--secrets", str(work / f"{name}.secrets"), "--port", str(port),
            "--insecure-sim-attestation", *extra]
    if join:
        args += ["--join", join]
    for p in peers:
        args += ["--peer", p]
    return start(name, args, port, work / "logs", "/healthz")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg):
    work = tmp_path_factory.mktemp("cluster")
    url = pg.create_db("cluster")
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    a = start_replica(work, "ks-a", url, port=ports[0], peers=(urls[1], urls[2]))
    with ThreadPoolExecutor(2) as pool:  # B and C join A at the same time
        fb = pool.submit(start_replica, work, "ks-b", url, port=ports[1], join=urls[0], peers=(urls[0], urls[2]))
        fc = pool.submit(start_replica, work, "ks-c", url, port=ports[2], join=urls[0], peers=(urls[0], urls[1]))
        b, c = fb.result(), fc.result()
    servers = {"a": a, "b": b, "c": c}
    yield work, url, urls, servers
    for s in servers.values():
        s.stop()


def test_cluster(cluster, pg):
    work, db_url, urls, servers = cluster
    home = Home(work / "home")
    pin = attest_key_service(",".join(urls), insecure_sim=True)  # all three present one identity
    home.save_pin(pin)
    ks = KeyServiceClient(pin, counter=home.call_counter(), witness=home.state_witness())
    owner, user = home.new_identity("owner"), home.new_identity("user")
    # --- the demo flow, each step through another replica -------------------
    per = [KeyServiceClient(attest_key_service(u, insecure_sim=True), counter=home.call_counter(),
                            witness=home.state_witness()) for u in urls]
    per[0].register(owner)
    per[1].register(user)
    key = sealed_model.new_model_key()
    sealed = work / "digits.sealed"
    seal_id = sealed_model.seal_file(DIGITS, sealed, key, "digits").seal_id
    pack = work / "p.pack"
    build_pack(pack, [sealed])
    mr = mrenclave_for(pack, 2.0, False, pin.signing_public_key)
    per[2].publish_model(owner, "digits", key, EnclavePolicy(mrenclave=(mr,)), seal_id)
    per[0].grant(owner, "digits", user.principal_id)
    rk = new_request_key()
    per[1].enroll(user, "digits", rk)
    action = start_action(work, pack=pack, ks_url=",".join(urls), extra=["--key-ttl", "2"],
                          env={"SESEMI_KS_KEY": pin.signing_public_key})
    try:
        x = np.load(HELDOUT)["x"][:2].astype(np.float32)
        client = ActionClient(action.url)
        out = client.infer("digits", user.principal_id, rk, {"image": x})
        assert out.outputs
        # --- revoked on B, refused by C (and by the action once its TTL passes) ---
        per[1].revoke(owner, "digits", user.principal_id)
        enclave = EnclaveKeyClient(urls[2], ks_signing_key=bytes.fromhex(pin.signing_public_key))
        with pytest.raises(AccessDenied, match="not granted"):
            _release(enclave, mr, user.principal_id, seal_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.infer("digits", user.principal_id, rk, {"image": x})
            except AccessDenied:  # the action's refusal (it does not say why: `sesemi user status` does)
                break
            time.sleep(0.5)
        else:
            pytest.fail("the action still served 30 s after the revocation (key TTL 2 s)")
        per[2].grant(owner, "digits", user.principal_id)
        # --- SIGKILL of the replica in use, mid-stream: no acknowledged write lost ---
        users = [home.new_identity(f"u{i}") for i in range(4)]
        for u in users:
            ks.register(u)
        expected: dict[str, bool] = {}
        victim = servers["a"]
        for i in range(40):
            u = users[i % 4]
            if i == 15:
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
            granting = (i // 4) % 2 == 0
            (ks.grant if granting else ks.revoke)(owner, "digits", u.principal_id)
            expected[u.principal_id] = granting  # acknowledged
        granted = set(per[1].get_model(owner, "digits")["grants"])
        for pid, g in expected.items():
            assert (pid in granted) == g, "an acknowledged grant/revoke was lost"
        # --- the action and the CLI fail over too (A is dead) --------------------
        time.sleep(2.2)  # the action's cached keys expire: the next request fetches from B or C
        out = client.infer("digits", user.principal_id, rk, {"image": x})
        assert out.outputs
        p = sesemi(home.root, "grant", "digits", users[0].principal_id, "--as", "owner")
        assert p.returncode == 0
        # --- A restarts on a database restored to an older copy: its peers refuse it ---
        # (covered against a running replica in test_store_tamper; here a restarted one.)
    finally:
        action.stop()


def _release(enclave: EnclaveKeyClient, mr: str, user_id: str, seal_id: str):
    from sesemi import hpke_box
    from sesemi.attestation.claims import report_data_binding
    from sesemi.attestation.sim import SimBackend

    pub = hpke_box.public_raw(hpke_box.new_private_key())
    nonce = enclave.nonce()
    token, _ = enclave.attest(nonce, SimBackend(mr).evidence(report_data_binding(nonce, pub)), pub)
    return enclave.keys(token, "digits", user_id, True, seal_id=seal_id)


def test_joining_replica_refused_under_the_cluster_policy(cluster):
    """D runs other trusted settings (another measurement): B's cluster policy,
    by default exactly B's own mrenclave, refuses it, and D gets no identity."""
    work, db_url, urls, _ = cluster
    with pytest.raises(RuntimeError, match="exited") as info:
        start_replica(work, "ks-d", db_url, join=urls[1], extra=("--token-ttl", "599"))
    assert "mrenclave" in str(info.value)
    assert not (work / "ks-d.secrets").exists()


def test_restarted_replica_refuses_a_database_behind_a_live_peer(cluster, pg):
    """The host restores an older copy of the database and restarts C: B, alive,
    has seen a newer state version, and C refuses to serve, saying why."""
    work, db_url, urls, servers = cluster
    dump = work / "cluster.dump"
    import subprocess

    subprocess.run([str(pg.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "sesemi", "-Fc",
                    "-f", str(dump), "cluster"], check=True, capture_output=True, timeout=60)
    home = Home(work / "home")
    ks = KeyServiceClient(home.pin(), counter=home.call_counter(), witness=home.state_witness())
    ks.register(home.new_identity("late"))            # a write after the backup
    servers["c"].stop()
    subprocess.run([str(pg.bin / "pg_restore"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "sesemi", "--clean",
                    "--if-exists", "-d", "cluster", str(dump)], check=True, capture_output=True, timeout=60)
    with pytest.raises(RuntimeError, match="exited") as info:
        servers["c"] = start_replica(work, "ks-c", db_url, peers=(urls[1],))
    assert "the database is behind" in str(info.value) and "peer replica has seen" in str(info.value)
