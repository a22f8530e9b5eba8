"""A whole SeSeMI deployment on this machine, driven through the SDK exactly as
an owner and a user would: a key service process, identities, sealed models,
packs, policies, grants, request keys, and action processes.

The demo, the end-to-end tests and the benchmarks all stand on this, so they
exercise one path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sesemi import sealed_model
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.envelope import new_request_key
from sesemi.identity import Identity
from sesemi.measure import action_mrenclave, action_trusted_config
from sesemi.pack import Pack, build as build_pack
from sesemi.policy import EnclavePolicy

from ..home import Home
from .processes import Server, start_action, start_keyservice


def mrenclave_for(pack_path: Path, key_ttl_s: float = 60.0, debug: bool = False, ks_key: str = "") -> str:
    """The measurement an action serving this pack with these settings reports (sim)."""
    pack = Pack(pack_path)
    try:
        trusted = action_trusted_config(tee="sim", key_ttl_s=key_ttl_s, insecure_sim_debug=debug, ks_key=ks_key)
        return action_mrenclave(trusted, pack.manifest_digest)
    finally:
        pack.close()


@dataclass
class LocalWorld:
    work: Path
    ks_server: Server
    ks: KeyServiceClient
    home: Home
    owner: Identity
    user: Identity
    servers: list[Server] = field(default_factory=list)
    # Actions pin the key service (SESEMI_KS_KEY, measured) unless told not to:
    # the platform emulator's containers take their settings from /init, which may
    # not carry trusted settings, so they run unpinned (allowed with tee=sim only).
    pin_ks: bool = True
    request_keys: dict[str, bytes] = field(default_factory=dict)
    key_versions: dict[tuple[str, str], int] = field(default_factory=dict)  # (user id, model id) -> version
    model_keys: dict[str, bytes] = field(default_factory=dict)
    seal_ids: dict[str, str] = field(default_factory=dict)

    def ks_key(self, pinned: bool | None = None) -> str:
        return self.ks.pin.signing_public_key if (self.pin_ks if pinned is None else pinned) else ""

    def mrenclave(self, pack: Path, key_ttl_s: float = 60.0, debug: bool = False, pinned: bool | None = None) -> str:
        return mrenclave_for(pack, key_ttl_s, debug, self.ks_key(pinned))

    @classmethod
    def start(cls, work: Path, insecure_sim: bool = True, ks_args: Sequence[str] = ()) -> "LocalWorld":
        work.mkdir(parents=True, exist_ok=True)
        ks_srv = start_keyservice(work, insecure_sim=insecure_sim, extra=ks_args)
        try:
            home = Home(work / "home")
            pin = attest_key_service(ks_srv.url, insecure_sim=True)
            home.save_pin(pin)
            ks = KeyServiceClient(pin, counter=home.call_counter())
            owner, user = home.new_identity("owner"), home.new_identity("user")
            ks.register(owner)
            ks.register(user)
        except BaseException:
            ks_srv.stop()
            raise
        return cls(work, ks_srv, ks, home, owner, user, [ks_srv])

    def seal(self, model_id: str, src: Path) -> tuple[Path, bytes]:
        key = sealed_model.new_model_key()
        out = self.work / f"{model_id}.sealed"
        self.seal_ids[model_id] = sealed_model.seal_file(src, out, key, model_id).seal_id
        self.model_keys[model_id] = key
        return out, key

    def make_pack(self, name: str, sealed: list[Path]) -> Path:
        out = self.work / f"{name}.pack"
        build_pack(out, sealed)
        return out

    def publish(self, model_id: str, key: bytes, *mrenclaves: str, **policy: Any) -> None:
        self.ks.publish_model(self.owner, model_id, key, EnclavePolicy(mrenclave=tuple(mrenclaves), **policy),
                              self.seal_ids[model_id])

    def enroll(self, user: Identity, model_id: str) -> bytes:
        rk = new_request_key()
        version = self.ks.enroll(user, model_id, rk)
        self.key_versions[(user.principal_id, model_id)] = version
        if user is self.user:
            self.request_keys[model_id] = rk
        return rk

    def new_user(self, name: str) -> Identity:
        u = self.home.new_identity(name)
        self.ks.register(u)
        return u

    def deploy_pack(self, name: str, models: Mapping[str, Path], key_ttl_s: float = 60.0,
                    pinned: bool | None = None) -> Path:
        """Seal each model, pack them, publish each for this pack's measurement,
        grant the world's user and enroll its request keys."""
        sealed = {mid: self.seal(mid, src) for mid, src in models.items()}
        pack = self.make_pack(name, [p for p, _ in sealed.values()])
        mr = self.mrenclave(pack, key_ttl_s, pinned=pinned)
        for mid, (_, key) in sealed.items():
            self.publish(mid, key, mr)
            self.ks.grant(self.owner, mid, self.user.principal_id)
            self.enroll(self.user, mid)
        return pack

    def action(self, pack: Path, pinned: bool | None = None, **kw: Any) -> Server:
        key = self.ks_key(pinned)
        if key:
            kw["env"] = {"SESEMI_KS_KEY": key, **(kw.get("env") or {})}
        srv = start_action(self.work, pack=pack, ks_url=self.ks_server.url, **kw)
        self.servers.append(srv)
        return srv

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()
