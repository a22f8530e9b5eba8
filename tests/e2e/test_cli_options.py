"""Conventions every command follows: --version, help with defaults on every
option, global options after the command, --json, a taken port, deploy's TLS
options (and the router's)."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bundle_tool.cli import HelpFormatter, _Version, build_parser
from bundle_tool.testing.processes import free_port
from router.config import parse as parse_router_config
from sesemi.errors import FormatError, UnavailableError
from sesemi.openwhisk import ActionSpec, Credentials, OpenWhiskClient

from .test_cli import sesemi


def test_version():
    p = sesemi(None, "--version")
    assert p.stdout.strip() == f"sesemi {version('sesemi')}"


def _leaf_parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def test_every_option_has_help_and_shows_its_default():
    leaves = list(_leaf_parsers(build_parser()))
    assert len(leaves) >= 19
    for path, parser in leaves:
        assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, HelpFormatter), path
        text = "".join(parser.format_help().split())  # argparse wraps lines at spaces and hyphens
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, _Version)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"sesemi {' '.join(path)}: {name} has no help text"
            d = action.default
            if action.option_strings and d not in (None, False, [], argparse.SUPPRESS):
                shown = " ".join(parser.formatter_class("x")._get_help_string(action).split())
                value = f"{d:g}" if isinstance(d, float) else str(d)
                assert "default" in shown.lower() and (value in shown or "$" in shown), (path, name, shown)
                assert "".join(shown.replace("%%", "%").split()) in text, (path, name)


def test_help_of_a_subcommand_shows_defaults():
    out = sesemi(None, "keyservice", "serve", "--help").stdout
    assert "(default: 8443)" in out and "(default: 600)" in out and "--db PATH" in out
    # a server takes --home, not the client's --json or timeouts (they would do nothing there)
    assert "--home DIR" in out and "--json" not in out and "--connect-timeout" not in out


def test_global_options_work_after_the_command(tmp_path):
    home = tmp_path / "h"
    pid = sesemi(None, "identity", "new", "alice", "--home", str(home)).stdout.strip()
    assert (home / "identities" / "alice.pem").exists()
    assert sesemi(None, "--home", str(home), "identity", "show", "alice").stdout.strip() == pid
    assert sesemi(None, "identity", "--home", str(home), "show", "alice").stdout.strip() == pid
    assert json.loads(sesemi(None, "--json", "identity", "show", "alice", "--home", str(home)).stdout) == \
        {"name": "alice", "principal_id": pid}
    # the later one wins, as with any repeated option
    p = sesemi(None, "--home", str(tmp_path / "other"), "identity", "show", "alice", "--home", str(home))
    assert p.stdout.strip() == pid


@pytest.mark.parametrize("server", ["keyservice", "action"])
def test_serve_on_a_taken_port_is_one_line(tmp_path, server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = (("keyservice", "serve", "--db", str(tmp_path / "ks.db"), "--insecure-sim-attestation")
                if server == "keyservice" else ("action", "serve"))
        p = sesemi(None, *args, "--port", str(port), ok=False)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert lines == [f"sesemi: error: cannot listen on 127.0.0.1:{port}: Address already in use"], p.stderr
    assert "key service on" not in p.stdout + p.stderr


def test_deploy_dry_run_json_has_no_auth(tmp_path):
    props = tmp_path / "wskprops"
    props.write_text("APIHOST=http://127.0.0.1:9\nAUTH=user:s3cret-pass\nNAMESPACE=guest\n")
    p = sesemi(None, "deploy", "a", "--image", "img", "--wskprops", str(props), "--dry-run", "--json")
    doc = json.loads(p.stdout)
    (req,) = doc["requests"]
    assert req["method"] == "PUT" and req["url"].startswith("http://127.0.0.1:9/api/v1/namespaces/guest/actions/a")
    assert req["body"]["exec"] == {"kind": "blackbox", "image": "img"}
    assert "s3cret" not in p.stdout + p.stderr


# -- TLS towards OpenWhisk: --cacert FILE, -i/--insecure, and the router's config ------------------------

def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openwhisk.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _PutAction(BaseHTTPRequestHandler):
    """Answers an action PUT as OpenWhisk does (the created action's record):
    enough to see whether the TLS handshake let the request through."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"name": self.path.split("/")[-1].split("?")[0], "version": "0.0.1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def tls_openwhisk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(tmp)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _PutAction)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    props = tmp / "wskprops"
    props.write_text(f"APIHOST=https://127.0.0.1:{server.server_address[1]}\nAUTH=user:pass\n")
    yield props, cert
    server.shutdown()


def test_deploy_tls_self_signed_refused_then_cacert_then_insecure(tls_openwhisk):
    props, cert = tls_openwhisk
    base = ("deploy", "a", "--image", "img", "--wskprops", str(props))
    p = sesemi(None, *base, ok=False)
    assert p.returncode != 0 and "does not verify" in p.stderr and "--cacert" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = sesemi(None, *base, "--cacert", str(cert))
    assert "deployed a (version 0.0.1)" in p.stdout and "INSECURE" not in p.stderr
    for flag in ("-i", "--insecure"):
        p = sesemi(None, *base, flag)
        assert "deployed a (version 0.0.1)" in p.stdout
        assert p.stderr.strip().splitlines() == [
            "sesemi: warning: INSECURE: -i/--insecure: the API host's TLS certificate is not verified"]
    p = sesemi(None, *base, "--cacert", str(props.parent / "missing.pem"), ok=False)
    assert "no CA certificate file" in p.stderr


def test_router_config_tls_options(tls_openwhisk):
    props, cert = tls_openwhisk
    packs = [{"name": "p", "models": ["m"], "actions": ["a"]}]

    def client(ow: dict) -> OpenWhiskClient:
        cfg = parse_router_config({"packs": packs, "openwhisk": {"wskprops": str(props), **ow}})
        return OpenWhiskClient(cfg.credentials(), **cfg.tls())

    with pytest.raises(UnavailableError, match="does not verify"):
        client({}).put_action(ActionSpec("a", "img"))
    assert client({"cacert": str(cert)}).put_action(ActionSpec("a", "img"))["version"] == "0.0.1"
    assert client({"insecure": True}).put_action(ActionSpec("a", "img"))["version"] == "0.0.1"
    for bad in ({"insecure": "yes"}, {"cacert": 3}, {"verify": False}):
        with pytest.raises(FormatError):
            parse_router_config({"packs": packs, "openwhisk": bad})
    with pytest.raises(FormatError, match="no CA certificate file"):
        OpenWhiskClient(Credentials("https://127.0.0.1:9", "u:p"), cacert=str(props.parent / "nope.pem"))
