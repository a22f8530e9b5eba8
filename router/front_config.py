"""The front end's configuration: which routers stand behind it, each with the
config file it runs. The routing table (model id -> router) is derived from
those files with the router's own parser, so it cannot say other than what the
routers serve; a model claimed by two routers is refused. Example in
docs/packing.md ("Routers at scale")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from sesemi.errors import FormatError, SesemiError
from sesemi.names import check_local_name

from . import config as router_config

_ROUTER_KEYS = {"name", "url", "config", "read_timeout_s"}
_TOP_KEYS = {"routers", "connect_timeout_s", "max_body_bytes"}
# A router answers within its own bound (RouterConfig.answer_bound_s); the
# front end allows this much more for the hop and the router's own work.
READ_MARGIN_S = 5.0


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    models: frozenset[str]
    models_sha256: str
    read_timeout_s: float


@dataclass(frozen=True)
class FrontConfig:
    backends: tuple[Backend, ...]
    connect_timeout_s: float = 2.0
    max_body_bytes: int = 8 << 20

    def routes(self) -> Mapping[str, Backend]:
        return {m: b for b in self.backends for m in b.models}


def _positive(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    if key not in doc:
        return None
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
        raise FormatError(f"{where}: {key} must be a number of seconds in (0, 3600]")
    return float(v)


def _url(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise FormatError(f"{where}: url must be a string such as http://10.0.0.5:8000")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise FormatError(f"{where}: url must be http(s)://HOST[:PORT] with no path, got {v!r}")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise FormatError(f"{where}: url has an invalid port: {v!r}") from None
    return v.rstrip("/")


def parse(doc: Any, base: Path) -> FrontConfig:
    """`base`: the folder relative router config paths are read from."""
    if not isinstance(doc, dict):
        raise FormatError("front end config must be an object")
    extra = set(doc) - _TOP_KEYS
    if extra:
        raise FormatError(f"front end config: unknown setting(s) {sorted(extra)}")
    routers = doc.get("routers")
    if not isinstance(routers, list) or not routers:
        raise FormatError("front end config: 'routers' must list at least one router")
    backends: list[Backend] = []
    owner: dict[str, str] = {}
    for i, r in enumerate(routers):
        where = f"routers[{i}]"
        if not isinstance(r, dict):
            raise FormatError(f"{where} must be an object")
        extra = set(r) - _ROUTER_KEYS
        if extra:
            raise FormatError(f"{where}: unknown setting(s) {sorted(extra)}")
        name = check_local_name(r.get("name", f"router{i + 1}"), "router name")
        where = f"router {name}"
        url = _url(r.get("url"), where)
        if not isinstance(r.get("config"), str) or not r["config"]:
            raise FormatError(f"{where}: config must name the router's config file")
        path = base / r["config"]
        try:
            cfg = router_config.load(path)
        except SesemiError as exc:
            raise FormatError(f"{where}: {exc}") from None
        for b in backends:
            if b.name == name:
                raise FormatError(f"two routers are named {name}")
            if b.url == url:
                raise FormatError(f"routers {b.name} and {name} have the same url {url}")
        models = cfg.pack_of()
        for m in models:
            if m in owner:
                raise FormatError(f"model {m} is claimed by routers {owner[m]} and {name}: "
                                  "each model must be served by one router")
            owner[m] = name
        read = _positive(r, "read_timeout_s", where) or min(3600.0, cfg.answer_bound_s() + READ_MARGIN_S)
        backends.append(Backend(name, url, frozenset(models), cfg.models_digest(), read))
    kw: dict[str, Any] = {}
    c = _positive(doc, "connect_timeout_s", "front end config")
    if c is not None:
        kw["connect_timeout_s"] = c
    if "max_body_bytes" in doc:
        v = doc["max_body_bytes"]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise FormatError("front end config: max_body_bytes must be a positive integer")
        kw["max_body_bytes"] = v
    return FrontConfig(tuple(backends), **kw)


def load(path: str | Path) -> FrontConfig:
    path = Path(path)
    return parse(router_config.read_document(path, "front end config"), path.parent)
