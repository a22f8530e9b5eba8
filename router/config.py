"""The router's configuration file (JSON, or YAML when PyYAML is installed):
which models are in which pack, which actions serve each pack, the policy,
and where OpenWhisk is. Example in docs/packing.md."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from sesemi import packplan
from sesemi.encoding import JSONDecodeError, json_loads
from sesemi.errors import FormatError
from sesemi.names import check_model_id
from sesemi.openwhisk import Credentials, check_action_name, load_credentials

from .policy import POLICIES, PolicyParams

# The default `poll_bound_s` of sesemi.openwhisk.OpenWhiskClient.invoke: how
# long the router polls an activation record after OpenWhisk's 202.
INVOKE_POLL_BOUND_S = 60.0


OPENWHISK_KEYS = frozenset({"wskprops", "apihost", "auth", "namespace", "insecure", "cacert"})


@dataclass(frozen=True)
class PackConfig:
    name: str
    models: tuple[str, ...]
    actions: tuple[str, ...]
    policy: PolicyParams | None = None  # this pack's own settings over the global policy (a plan's alone models)


@dataclass(frozen=True)
class RouterConfig:
    packs: tuple[PackConfig, ...]
    policy: PolicyParams
    policy_kind: str = "sesemi"
    queue_timeout_s: float = 30.0      # bound on a request's wait for a free action
    max_queue: int = 1024              # requests waiting at once, all packs
    max_attempts: int = 3              # activations tried per request (the first and the retries)
    retry_percent: float = 0.2         # retries: at most this share of requests (router/retry_budget.py) ...
    retry_min_per_s: float = 5.0       # ... plus this many a second
    activation_timeout_s: float = 75.0  # read bound of one blocking invoke (OpenWhisk waits 60 s)
    connect_timeout_s: float = 5.0     # bound on reaching the OpenWhisk API host
    max_body_bytes: int = 8 << 20
    openwhisk: Mapping[str, Any] = None  # type: ignore[assignment]

    def pack_of(self) -> dict[str, str]:
        return {m: p.name for p in self.packs for m in p.models}

    def tls(self) -> dict[str, Any]:
        """OpenWhiskClient's TLS options: `cacert` (a PEM CA bundle to trust for a
        self-signed API host) or `insecure: true` (no verification, as `wsk -i`)."""
        ow = dict(self.openwhisk or {})
        return {"insecure": bool(ow.get("insecure", False)), "cacert": ow.get("cacert")}

    def models_digest(self) -> str:
        """What a front end compares with the router it forwards to (/healthz):
        a router restarted with another config than the front end read differs."""
        return hashlib.sha256("\n".join(sorted(self.pack_of())).encode()).hexdigest()

    def answer_bound_s(self) -> float:
        """The longest this router takes to answer one request: the queue wait,
        then each attempt's blocking invoke and, after a 202, its polling
        (`OpenWhiskClient.invoke`'s `poll_bound_s`, which the router leaves at
        its default). A front end waits this long, and no longer."""
        return self.queue_timeout_s + self.max_attempts * (self.activation_timeout_s + INVOKE_POLL_BOUND_S)

    def credentials(self) -> Credentials:
        ow = dict(self.openwhisk or {})
        return load_credentials(ow.get("wskprops"), apihost=ow.get("apihost"), auth=ow.get("auth"),
                                namespace=ow.get("namespace"))


def read_document(path: Path, what: str = "router config") -> Any:
    """A JSON file, or YAML when it is named .yaml/.yml and PyYAML is installed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FormatError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise FormatError(f"a YAML {what} needs PyYAML (pip install pyyaml), or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FormatError(f"{what} {path}: invalid YAML ({type(exc).__name__})") from None
    try:
        return json_loads(text)
    except JSONDecodeError:
        raise FormatError(f"{what} {path}: invalid JSON") from None


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise FormatError(f"{what} must be a non-empty list of strings")
    return v


def _policy(pol: Any, base: PolicyParams, what: str) -> PolicyParams:
    if not isinstance(pol, dict):
        raise FormatError(f"{what} must be an object")
    known = {f.name for f in fields(PolicyParams)}
    extra = set(pol) - known
    if extra:
        raise FormatError(f"{what}: unknown setting(s) {sorted(extra)}")
    try:
        return replace(base, **pol).validate()
    except TypeError:
        raise FormatError(f"{what}: bad settings") from None


def parse(doc: Any) -> RouterConfig:
    if isinstance(doc, dict) and "format" in doc:  # a pack plan (`sesemi pack plan`), read as written
        doc = packplan.router_config(doc)
    if not isinstance(doc, dict):
        raise FormatError("router config must be an object")
    packs_doc = doc.get("packs")
    if isinstance(packs_doc, dict):  # {"name": {"models": [...], "actions": [...]}}
        packs_doc = [{"name": k, **v} for k, v in packs_doc.items() if isinstance(v, dict)]
    if not isinstance(packs_doc, list) or not packs_doc:
        raise FormatError("router config: 'packs' must list at least one pack")
    packs, seen_models, seen_actions = [], set(), set()
    for i, p in enumerate(packs_doc):
        if not isinstance(p, dict):
            raise FormatError(f"packs[{i}] must be an object")
        name = str(p.get("name") or f"pack{i}")
        models = [check_model_id(m) for m in _str_list(p.get("models"), f"pack {name}: models")]
        actions = [check_action_name(a) for a in _str_list(p.get("actions"), f"pack {name}: actions")]
        for m in models:
            if m in seen_models:
                raise FormatError(f"model {m} is in more than one pack")
            seen_models.add(m)
        for a in actions:
            if a in seen_actions:
                raise FormatError(f"action {a} serves more than one pack")
            seen_actions.add(a)
        packs.append(PackConfig(name, tuple(models), tuple(actions), p.get("policy")))
    pol = doc.get("policy") or {}
    if not isinstance(pol, dict):
        raise FormatError("router config: 'policy' must be an object")
    known = {f.name for f in fields(PolicyParams)}
    extra = set(pol) - known - {"kind"}
    if extra:
        raise FormatError(f"router config: unknown policy setting(s) {sorted(extra)}")
    kind = pol.get("kind", "sesemi")
    if kind not in POLICIES:
        raise FormatError(f"policy.kind must be one of {sorted(POLICIES)}")
    try:
        params = PolicyParams(**{k: v for k, v in pol.items() if k in known}).validate()
    except TypeError:
        raise FormatError("router config: bad policy settings") from None
    packs = [replace(p, policy=None if p.policy is None else _policy(p.policy, params, f"pack {p.name}: policy"))
             for p in packs]
    top = {f.name for f in fields(RouterConfig)} - {"packs", "policy", "policy_kind", "openwhisk"}
    extra = set(doc) - top - {"packs", "policy", "openwhisk"}
    if extra:
        raise FormatError(f"router config: unknown setting(s) {sorted(extra)}")
    kw: dict[str, Any] = {}
    for key in top:
        if key in doc:
            v = doc[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise FormatError(f"router config: {key} must be a positive number")
            kw[key] = int(v) if key in ("max_queue", "max_attempts", "max_body_bytes") else float(v)
    ow = doc.get("openwhisk") or {}
    if not isinstance(ow, dict):
        raise FormatError("router config: 'openwhisk' must be an object")
    extra = set(ow) - OPENWHISK_KEYS
    if extra:
        raise FormatError(f"router config: unknown openwhisk setting(s) {sorted(extra)}")
    if not isinstance(ow.get("insecure", False), bool):
        raise FormatError("router config: openwhisk.insecure must be true or false")
    if ow.get("cacert") is not None and (not isinstance(ow["cacert"], str) or not ow["cacert"]):
        raise FormatError("router config: openwhisk.cacert must be a file path")
    return RouterConfig(tuple(packs), params, kind, openwhisk=ow, **kw)


def load(path: str | Path) -> RouterConfig:
    return parse(read_document(Path(path)))
