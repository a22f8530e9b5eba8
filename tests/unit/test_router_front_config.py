"""The front end's table is derived from the routers' own config files; what
it refuses, and the read bound it derives from each router's own bounds."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from router import front_config
from router.config import INVOKE_POLL_BOUND_S, parse as parse_router
from sesemi.errors import FormatError
from sesemi.openwhisk import OpenWhiskClient


def _router(tmp: Path, name: str, models: list[str], **settings) -> str:
    doc = {"openwhisk": {"apihost": "http://127.0.0.1:1", "auth": "u:p"},
           "packs": [{"name": name, "models": models, "actions": [f"{name}-1"]}], **settings}
    (tmp / f"{name}.json").write_text(json.dumps(doc))
    return f"{name}.json"


def _front(tmp: Path, routers: list[dict], **top) -> front_config.FrontConfig:
    (tmp / "front.json").write_text(json.dumps({"routers": routers, **top}))
    return front_config.load(tmp / "front.json")


def test_table_comes_from_the_routers_files(tmp_path):
    a = _router(tmp_path, "vision", ["mobilenet", "resnet"], queue_timeout_s=10, max_attempts=2,
                activation_timeout_s=20)
    b = _router(tmp_path, "digits", ["digits"])
    cfg = _front(tmp_path, [{"name": "v", "url": "http://10.0.0.1:8000/", "config": a},
                            {"name": "d", "url": "https://10.0.0.2", "config": b, "read_timeout_s": 7}])
    routes = cfg.routes()
    assert {m: r.name for m, r in routes.items()} == {"mobilenet": "v", "resnet": "v", "digits": "d"}
    assert routes["mobilenet"].url == "http://10.0.0.1:8000"
    # The router's own worst case (queue, then each attempt's invoke and polling) plus a margin.
    assert routes["resnet"].read_timeout_s == 10 + 2 * (20 + INVOKE_POLL_BOUND_S) + front_config.READ_MARGIN_S
    assert routes["digits"].read_timeout_s == 7
    assert routes["digits"].models_sha256 == parse_router(json.loads((tmp_path / b).read_text())).models_digest()


def test_poll_bound_matches_the_client_the_router_uses():
    assert inspect.signature(OpenWhiskClient.invoke).parameters["poll_bound_s"].default == INVOKE_POLL_BOUND_S


@pytest.mark.parametrize("routers, top, message", [
    ([{"name": "a", "url": "http://h:1", "config": "a.json"}, {"name": "b", "url": "http://h:2", "config": "b.json"}],
     {}, "model shared is claimed by routers a and b"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json"}, {"name": "c", "url": "http://h:1/", "config": "c.json"}],
     {}, "same url"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json"}, {"name": "a", "url": "http://h:2", "config": "c.json"}],
     {}, "two routers are named a"),
    ([{"name": "a", "url": "http://h:1/v1/infer", "config": "a.json"}], {}, "no path"),
    ([{"name": "a", "url": "ftp://h", "config": "a.json"}], {}, "http(s)://"),
    ([{"name": "a", "url": "http://h:99999", "config": "a.json"}], {}, "invalid port"),
    ([{"name": "a", "url": "http://h:1", "config": "nope.json"}], {}, "router a: cannot read router config"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json", "extra": 1}], {}, "unknown setting"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json", "read_timeout_s": 0}], {}, "read_timeout_s"),
    ([{"name": "../x", "url": "http://h:1", "config": "a.json"}], {}, "router name"),
    ([], {}, "at least one router"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json"}], {"connect_timeout_s": True}, "connect_timeout_s"),
    ([{"name": "a", "url": "http://h:1", "config": "a.json"}], {"max_body": 1}, "unknown setting"),
])
def test_refused_configs_say_why(tmp_path, routers, top, message):
    _router(tmp_path, "a", ["shared", "m1"])
    _router(tmp_path, "b", ["shared"])
    _router(tmp_path, "c", ["m3"])
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _front(tmp_path, routers, **top)


def test_missing_or_broken_front_config(tmp_path):
    with pytest.raises(FormatError, match="cannot read front end config"):
        front_config.load(tmp_path / "missing.json")
    (tmp_path / "f.json").write_text("{")
    with pytest.raises(FormatError, match="front end config .* invalid JSON"):
        front_config.load(tmp_path / "f.json")


def test_the_documented_example_parses(tmp_path):
    """docs/packing.md's front.json, with router files for its two names."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "packing.md").read_text()
    section = text[text.index("## Routers at scale"):]
    example = section[section.index("```json") + len("```json"):]
    (tmp_path / "front.json").write_text(example[:example.index("```")])
    _router(tmp_path, "router-vision", ["mobilenet", "resnet"])
    _router(tmp_path, "router-digits", ["digits"])
    cfg = front_config.load(tmp_path / "front.json")
    assert {m: b.name for m, b in cfg.routes().items()} == {"mobilenet": "vision", "resnet": "vision",
                                                             "digits": "digits"}
    assert cfg.connect_timeout_s == 2 and cfg.routes()["digits"].read_timeout_s == 120
    # The default read bound the page quotes for a router with default settings.
    assert cfg.routes()["resnet"].read_timeout_s == 440
