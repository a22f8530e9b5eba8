"""Shared fixtures. End-to-end fixtures start the real servers as processes
(`python -m bundle_tool ...`) and talk HTTP over loopback."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bundle_tool.home import Home
from bundle_tool.procs import Server, start_action, start_keyservice
from sesemi import sealed_model
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.identity import Identity
from sesemi.measure import action_mrenclave, action_trusted_config
from sesemi.pack import Pack, build as build_pack
from sesemi.policy import EnclavePolicy

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits" / "digits.tflite"
HELDOUT = REPO / "models" / "digits" / "digits_heldout.npz"


def mrenclave_for(pack_path: Path, key_ttl_s: float = 60.0, debug: bool = False) -> str:
    pack = Pack(pack_path)
    try:
        return action_mrenclave(action_trusted_config(tee="sim", key_ttl_s=key_ttl_s, insecure_sim_debug=debug),
                                pack.manifest_digest)
    finally:
        pack.close()


@dataclass
class World:
    """A key service with an owner, a granted user and the digits model published."""

    work: Path
    ks_server: Server
    ks: KeyServiceClient
    home: Home
    owner: Identity
    user: Identity
    model_key: bytes
    request_key: bytes
    sealed: Path
    pack: Path
    servers: list[Server] = field(default_factory=list)

    def seal(self, model_id: str, src: Path = DIGITS) -> tuple[Path, bytes]:
        key = sealed_model.new_model_key()
        out = self.work / f"{model_id}.sealed"
        sealed_model.seal_file(src, out, key, model_id)
        return out, key

    def make_pack(self, name: str, sealed: list[Path]) -> Path:
        out = self.work / f"{name}.pack"
        build_pack(out, sealed)
        return out

    def publish(self, model_id: str, key: bytes, *mrenclaves: str, **policy) -> None:
        self.ks.publish_model(self.owner, model_id, key, EnclavePolicy(mrenclave=tuple(mrenclaves), **policy))

    def enroll(self, user: Identity, model_id: str) -> bytes:
        rk = new_request_key()
        self.ks.enroll(user, model_id, rk)
        return rk

    def action(self, pack: Path | None = None, **kw) -> Server:
        srv = start_action(self.work, pack=pack or self.pack, ks_url=self.ks_server.url, **kw)
        self.servers.append(srv)
        return srv

    def new_user(self, name: str) -> Identity:
        u = self.home.new_identity(name)
        self.ks.register(u)
        return u


def make_world(work: Path, insecure_sim: bool = True) -> World:
    ks_srv = start_keyservice(work, insecure_sim=insecure_sim)
    home = Home(work / "home")
    pin = attest_key_service(ks_srv.url, insecure_sim=True)
    home.save_pin(pin)
    ks = KeyServiceClient(pin)
    owner, user = home.new_identity("owner"), home.new_identity("user")
    ks.register(owner)
    ks.register(user)
    w = World(work, ks_srv, ks, home, owner, user, b"", b"", work / "x", work / "x", [ks_srv])
    w.sealed, w.model_key = w.seal("digits")
    home.save_model_key("digits", w.model_key)
    w.pack = w.make_pack("main", [w.sealed])
    w.publish("digits", w.model_key, mrenclave_for(w.pack))
    ks.grant(owner, "digits", user.principal_id)
    w.request_key = w.enroll(user, "digits")
    home.save_request_key(user.principal_id, "digits", w.request_key)
    return w


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("world"))
    yield w
    for s in reversed(w.servers):
        s.stop()


@pytest.fixture(scope="module")
def action(world):
    return world.action()


@pytest.fixture(scope="session")
def heldout():
    d = np.load(HELDOUT)
    return d["x"].astype(np.float32), d["y"]


def plaintext_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=DIGITS.read_bytes())
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
