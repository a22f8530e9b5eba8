"""Every client call has a connect and a read bound, sized for its
job and configurable, and its error names the bound that expired."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bundle_tool.home import Home
from sesemi import envelope
from sesemi.client import ActionClient, EnclaveKeyClient, KeyServiceClient, KsPin
from sesemi.errors import FormatError, TimeoutExpired, UnavailableError
from sesemi.timeouts import Deadline, Timeouts, INFERENCE, KEY_SERVICE

from .silent import accepts_but_never_answers, never_accepts

X = {"image": np.zeros((1, 8, 8, 1), np.float32)}


def test_read_timeout_named():
    with accepts_but_never_answers() as url:
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=r"read timeout \(0.5 s\) expired.*did not answer") as ei:
            ActionClient(url, Timeouts(1, 0.5)).infer("m", "u", envelope.new_request_key(), X)
        assert ei.value.bound == "read" and time.monotonic() - t0 < 3


def test_connect_timeout_named():
    with never_accepts() as url:
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=r"connect timeout \(0.5 s\) expired") as ei:
            ActionClient(url, Timeouts(0.5, 5)).infer("m", "u", envelope.new_request_key(), X)
        assert ei.value.bound == "connect" and time.monotonic() - t0 < 3


def test_refused_connection_is_not_called_a_timeout():
    with pytest.raises(UnavailableError, match="cannot reach") as ei:
        ActionClient("http://127.0.0.1:9", Timeouts(1, 1)).infer("m", "u", envelope.new_request_key(), X)
    assert not isinstance(ei.value, TimeoutExpired)


def test_enclave_budget_spans_calls():
    """Each call's own bound (3 s) is longer than what the budget has left: the budget wins and is named."""
    with accepts_but_never_answers() as url:
        ks = EnclaveKeyClient(url, Timeouts(1, 3))
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=r"total budget \(0.8 s\) expired") as ei:
            ks.nonce(Deadline(0.8, "key service"))
        assert ei.value.bound == "budget" and time.monotonic() - t0 < 2.5


def test_defaults_per_job_and_environment(monkeypatch):
    assert KEY_SERVICE.read_s < INFERENCE.read_s
    monkeypatch.setenv("SESEMI_READ_TIMEOUT", "2.5")
    pin = KsPin("http://127.0.0.1:9", "00" * 32, "sim", "", "", 0, True, signing_public_key="00" * 32)
    assert KeyServiceClient(pin).http.timeouts == Timeouts(KEY_SERVICE.connect_s, 2.5)
    monkeypatch.setenv("SESEMI_READ_TIMEOUT", "soon")
    with pytest.raises(FormatError, match="SESEMI_READ_TIMEOUT"):
        KeyServiceClient(pin)
    with pytest.raises(FormatError, match="connect timeout"):
        Timeouts(0, 1)


def test_cli_infer_read_timeout_one_line(tmp_path, capsys):
    """The CLI's `infer` against an endpoint that accepts and never answers."""
    from bundle_tool.cli import main

    home = Home(tmp_path / "home")
    user = home.new_identity("u")
    home.save_request_key(user.principal_id, "digits", envelope.new_request_key())
    np.save(tmp_path / "x.npy", X["image"])
    with accepts_but_never_answers() as url:
        t0 = time.monotonic()
        code = main(["--home", str(home.root), "--read-timeout", "1", "infer", "digits", "--action", url, "--as", "u",
                     "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz")])
        took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.count("\n") == 1 and "read timeout (1 s) expired" in err, err
    assert took < 5


def test_cli_refuses_bad_timeout(tmp_path, capsys):
    from bundle_tool.cli import main

    assert main(["--home", str(tmp_path), "--connect-timeout", "-1", "ks", "attest", "http://127.0.0.1:9",
                 "--insecure-sim"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "connect timeout" in err, err


def test_router_openwhisk_client_bounds_named():
    """The router's (and `sesemi deploy`'s) client of OpenWhisk: both bounds configurable and named."""
    from router.config import parse
    from sesemi.openwhisk import Credentials, OpenWhiskClient

    cfg = parse({"packs": [{"name": "p", "models": ["m"], "actions": ["a"]}], "connect_timeout_s": 2,
                 "activation_timeout_s": 0.5})
    assert (cfg.connect_timeout_s, cfg.activation_timeout_s) == (2.0, 0.5)
    with accepts_but_never_answers() as url:
        client = OpenWhiskClient(Credentials(url, "u:p"), timeout=cfg.activation_timeout_s,
                                 connect_timeout=cfg.connect_timeout_s)
        with pytest.raises(TimeoutExpired, match=r"read timeout \(0.5 s\) expired"):
            client.invoke("a", {})
    with never_accepts() as url:
        client = OpenWhiskClient(Credentials(url, "u:p"), timeout=5, connect_timeout=0.5)
        with pytest.raises(TimeoutExpired, match=r"connect timeout \(0.5 s\) expired"):
            client.invoke("a", {})
