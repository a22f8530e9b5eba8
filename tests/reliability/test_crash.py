"""Issue 12 §3 crash consistency: SIGKILL the key service at random moments,
some during start-up, during a stream of registrations, publishes, grants,
revokes and enrolments; restart it each time on the same database. Then every
acknowledged operation is present, nothing is half-applied, the release path
agrees with the tables, and the database passes its integrity check."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import urllib3

from app.enclave_session import EnclaveSession
from bundle_tool.procs import free_port
from keyservice.store import Store, open_store
from sesemi.attestation.sim import SimBackend
from sesemi.client import EnclaveKeyClient, KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.errors import AccessDenied, NotFound, UnavailableError
from sesemi.identity import Identity
from sesemi.policy import EnclavePolicy
from sesemi.sealed_model import new_model_key
from sesemi.timeouts import Timeouts

from .crash_check import Expected, check_tables, integrity
from . import hygiene
from .figures import count, note

MR = SimBackend("ab" * 32).mrenclave
SEAL = "5e" * 16  # every model's published seal (the release path names it)
QUICK = Timeouts(1.0, 5.0)


class KillableKeyService:
    """The key service as a process we SIGKILL and restart on the same database and port."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.db = work / "ks" / "ks.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "keyservice.log", "ab")
        self.proc: subprocess.Popen | None = None
        self.kills = self.startup_kills = 0

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bundle_tool", "keyservice", "serve", "--db", str(self.db), "--port",
             str(self.port), "--insecure-sim-attestation"], stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None and self.proc.poll() is None, "key service exited on its own"
            try:
                if urllib3.request("GET", self.url + "/healthz", timeout=1, retries=False).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("key service did not come back")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


def _until_acked(fn, stop_at: float, may_abandon: bool = False, rng: random.Random | None = None):
    """Retry one operation (a fresh signature each time) until the service
    acknowledges it; or, if `may_abandon`, give up on it at the first cut
    half the time (returns None): then it must be applied whole or not at all."""
    while True:
        try:
            return fn()
        except UnavailableError:
            count("crash: attempts cut by a kill")
            if may_abandon and rng is not None and rng.random() < 0.5:
                return None
            if time.monotonic() > stop_at:
                raise
            time.sleep(0.05)


_CUT = object()


def _workload(ks: KillableKeyService, n_ops: int, kills: int, seed: int) -> tuple[Expected, dict]:
    rng = random.Random(seed)
    ks.spawn()
    ks.wait_ready()
    pin = attest_key_service(ks.url, insecure_sim=True, timeouts=QUICK)
    client = KeyServiceClient(pin, QUICK)
    exp = Expected()
    owner = Identity.generate("owner")
    stop_at = time.monotonic() + 600
    exp.principals.add(_until_acked(lambda: client.register(owner), stop_at))
    users: list[Identity] = []
    untouchable: set[tuple[str, str]] = set()  # pairs of abandoned grants or enrolments
    done = threading.Event()

    def killer() -> None:
        k = 0
        while not done.is_set() and k < kills:
            time.sleep(rng.uniform(0.1, 0.6))
            if done.is_set():
                break
            ks.kill()
            k += 1
            ks.spawn()
            if k % 3 == 1 and k < kills:  # some during start-up: imports, schema, secrets, before it answers
                time.sleep(rng.uniform(0.2, 1.5))
                ks.kill()
                ks.startup_kills += 1
                k += 1
                ks.spawn()
            ks.wait_ready()

    def attempt(fn):
        """Run fn until acknowledged, or abandon it after a cut: True if acknowledged."""
        res = _until_acked(lambda: fn() or True, stop_at, may_abandon=True, rng=rng)
        if res is None:
            exp.abandoned += 1
            return False
        return True

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    ops = 0
    mix = {"register": 0, "publish": 0, "grant": 0, "revoke": 0, "enroll": 0}
    n_models = 0
    while ops < n_ops or (t.is_alive() and ops < 20 * n_ops):
        kind = rng.choices(list(mix), weights=[2, 2, 3, 2, 3])[0]
        if kind == "register" or not users:
            u = Identity.generate(f"u{ops}")
            kind = "register"
            if attempt(lambda: client.register(u)):
                exp.principals.add(u.principal_id)
                users.append(u)
            else:
                exp.maybe_principals.add(u.principal_id)
        elif kind == "publish" or not exp.models:
            fresh = rng.random() < 0.3 or not exp.models
            mid = f"m{n_models}" if fresh else rng.choice(sorted(exp.models))
            n_models += fresh
            key = new_model_key()
            pub = lambda: client.publish_model(owner, mid, key, EnclavePolicy(mrenclave=(MR,)), SEAL)  # noqa: E731
            if fresh and not attempt(pub):
                exp.maybe_models.add(mid)
            else:
                if not fresh:
                    _until_acked(pub, stop_at)
                exp.models[mid] = (owner.principal_id, key, MR)
        elif kind == "grant":
            mid, u = rng.choice(sorted(exp.models)), rng.choice(users)
            pair = (mid, u.principal_id)
            if pair in untouchable:
                continue
            if pair in exp.grants or attempt(lambda: client.grant(owner, mid, u.principal_id)):
                if pair in exp.grants:
                    _until_acked(lambda: client.grant(owner, mid, u.principal_id), stop_at)
                exp.grants.add(pair)
            else:
                exp.maybe_grants.add(pair)
                untouchable.add(pair)
        elif kind == "revoke":
            pairs = sorted(exp.grants - untouchable)
            if not pairs:
                continue
            mid, uid = rng.choice(pairs)
            _until_acked(lambda: client.revoke(owner, mid, uid), stop_at)
            exp.grants.discard((mid, uid))
        else:
            pairs = sorted(exp.grants - untouchable)
            if not pairs:
                continue
            mid, uid = rng.choice(pairs)
            u = next(x for x in users if x.principal_id == uid)
            rk = new_request_key()
            if (mid, uid) in exp.request_keys:
                _until_acked(lambda: client.enroll(u, mid, rk), stop_at)
                exp.request_keys[(mid, uid)] = rk
            elif attempt(lambda: client.enroll(u, mid, rk)):
                exp.request_keys[(mid, uid)] = rk
            else:
                exp.maybe_request_keys[(mid, uid)] = rk
                untouchable.add((mid, uid))
        mix[kind] += 1
        ops += 1
    done.set()
    t.join(120)
    exp.acked = ops + 1 - exp.abandoned
    return exp, {"ops": ops + 1, "mix": mix, "pin": pin}


def _check_release_path(ks: KillableKeyService, exp: Expected, pin, store: Store) -> int:
    """What an attested enclave is given agrees with the tables, pair by pair."""
    session = EnclaveSession(SimBackend(MR), EnclaveKeyClient(ks.url, QUICK, bytes.fromhex(pin.signing_public_key)),
                             key_ttl_s=60, budget_s=30, seal_id_of=lambda _mid: SEAL)
    checked = 0
    users = sorted(exp.principals)
    for mid, (_, key, _) in sorted(exp.models.items()):
        mk, _ = session.keys(mid, None, need_model_key=True)
        assert mk == key, f"model {mid}: released model key is not the last published one"
        for uid in users:
            pair = (mid, uid)
            if pair in exp.maybe_grants or pair in exp.maybe_request_keys:
                # Applied or not: the release must agree with what the tables say.
                row = (store._one("SELECT 1 FROM grants WHERE model_id=? AND user_id=? AND active=1", mid, uid) is not None,
                       store._one("SELECT 1 FROM request_keys WHERE model_id=? AND user_id=?", mid, uid) is not None)
                granted, enrolled = row
                want = exp.request_keys.get(pair, exp.maybe_request_keys.get(pair))
            else:
                granted, enrolled, want = pair in exp.grants, pair in exp.request_keys, exp.request_keys.get(pair)
            try:
                _, rk = session.keys(mid, uid, need_model_key=False)
                assert granted and enrolled and rk == want, pair
            except (AccessDenied, NotFound):
                assert not (granted and enrolled), f"{mid}/{uid}: granted and enrolled, but refused"
            checked += 1
    return checked


def _run(tmp_path: Path, n_ops: int, kills: int, seed: int) -> None:
    ks = KillableKeyService(tmp_path)
    hygiene.watch(tmp_path)
    try:
        exp, info = _workload(ks, n_ops, kills, seed)
        for mid, (_, key, _) in exp.models.items():
            hygiene.remember(f"crash model key {mid}", key)
        for (mid, uid), key in exp.request_keys.items():
            hygiene.remember(f"crash request key {mid}/{uid[:8]}", key)
        store = open_store(str(ks.db))
        problems = check_tables(store, exp) + integrity(store)
        assert not problems, problems
        pairs = _check_release_path(ks, exp, info["pin"], store)
    finally:
        ks.stop()
    count("crash: kills survived", ks.kills)
    count("crash: kills during start-up", ks.startup_kills)
    count("crash: acknowledged operations", exp.acked)
    count("crash: acknowledged operations lost", 0)
    count("crash: operations cut by a kill and abandoned (whole or absent)", exp.abandoned)
    count("crash: release pairs checked", pairs)
    note("crash: op mix", str(info["mix"]))
    assert ks.kills >= kills


def test_crash_consistency_small(tmp_path):
    _run(tmp_path, n_ops=30, kills=2, seed=1)


@pytest.mark.soak
def test_crash_consistency(tmp_path):
    _run(tmp_path, n_ops=320, kills=16, seed=int(os.environ.get("SESEMI_CRASH_SEED", "12")))
