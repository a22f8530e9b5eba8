"""Issue 12 §3 tampering: flip every byte of a small sealed model, of a pack's
header and manifest, of a key-transport (hybrid HPKE) box, of an encrypted
request and of an encrypted response (the whole JSON answer, labels included).
Every flip must be detected."""

from __future__ import annotations

import io
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import urllib3

from sesemi import envelope, sealed_model, tensors
from sesemi.client import ActionClient
from sesemi.encoding import json_dumps, json_loads
from sesemi.errors import SesemiError
from sesemi.pack import Pack, build as build_pack
from sesemi.timeouts import Timeouts

from . import hygiene
from .figures import count

KEY = sealed_model.new_model_key()
X = {"image": np.random.default_rng(3).random((1, 8, 8, 1), dtype=np.float32)}
FAST_MASKS = (0x01,)
SOAK_MASKS = (0x01, 0x80, 0xFF)


def _flips(blob: bytes, masks, start: int = 0, end: int | None = None):
    for i in range(start, len(blob) if end is None else end):
        for m in masks:
            b = bytearray(blob)
            b[i] ^= m
            yield i, bytes(b)


def _record(what: str, made: int, detected: int) -> None:
    count(f"flips made: {what}", made)
    count(f"flips detected: {what}", detected)


# --- sealed model -------------------------------------------------------------------------------

def _sealed(plain: bytes) -> bytes:
    out = io.BytesIO()
    sealed_model.seal_stream(io.BytesIO(plain), out, KEY, "m", len(plain), chunk_size=sealed_model.MIN_CHUNK)
    return out.getvalue()


def _sealed_flips(plain: bytes, masks) -> None:
    blob = _sealed(plain)
    made = detected = 0
    for i, bad in _flips(blob, masks):
        made += 1
        r = io.BytesIO(bad)
        try:
            sealed_model.open_stream(r.read, len(bad), KEY, "m")
        except SesemiError:
            detected += 1
    _record("sealed model", made, detected)
    assert detected == made, f"{made - detected} of {made} flips went undetected"


def test_sealed_model_every_byte():
    _sealed_flips(os.urandom(6000), FAST_MASKS)  # two chunks of 4 KiB: header, both nonces, both tags


@pytest.mark.soak
def test_sealed_model_every_byte_soak():
    _sealed_flips(os.urandom(64 << 10), SOAK_MASKS)  # 16 chunks, three masks per byte (~200,000 flips)


# --- key-transport boxes (hybrid HPKE) ----------------------------------------------------------

def _hpke_flips(masks) -> None:
    from sesemi import hpke_box

    made = detected = 0
    for kem in (hpke_box.HYBRID,):  # the only suite accepted by default
        key = hpke_box.new_private_key(kem)
        info = hpke_box.info("release-model-key", "m", "5e" * 16)
        for i, bad in _flips(hpke_box.seal(KEY, key.public, info), masks):
            made += 1
            try:
                hpke_box.open_(bad, key, info)
            except SesemiError:
                detected += 1
    _record("hybrid HPKE box (header, ML-KEM and X25519 ciphertexts, AEAD)", made, detected)
    assert detected == made, f"{made - detected} of {made} flips went undetected"


def test_hpke_box_every_byte():
    _hpke_flips(FAST_MASKS)  # 1,171 bytes: header, ML-KEM-768 ct, X25519 ct, sealed key, tag


@pytest.mark.soak
def test_hpke_box_every_byte_soak():
    _hpke_flips(SOAK_MASKS)


# --- pack header and manifest -------------------------------------------------------------------

def _pack_flips(tmp_path, masks) -> None:
    models = []
    for mid in ("a", "b"):
        p = tmp_path / f"{mid}.sealed"
        plain = os.urandom(3000)
        out = io.BytesIO()
        sealed_model.seal_stream(io.BytesIO(plain), out, KEY, mid, len(plain), chunk_size=sealed_model.MIN_CHUNK)
        p.write_bytes(out.getvalue())
        models.append(p)
    build_pack(tmp_path / "p.pack", models)
    blob = (tmp_path / "p.pack").read_bytes()
    good = Pack(tmp_path / "p.pack")
    digest, base = good.manifest_digest, good._base
    good.close()
    made = detected = 0
    bad_path = tmp_path / "bad.pack"
    for i, bad in _flips(blob, masks, 0, base):
        made += 1
        bad_path.write_bytes(bad)
        try:
            p = Pack(bad_path)
        except SesemiError:
            detected += 1
            continue
        # A pack that still parses has another manifest digest, so another
        # mrenclave, and the key service releases no key to it (its policy
        # names the measurement of the genuine pack).
        if p.manifest_digest != digest:
            detected += 1
        p.close()
    _record("pack header+manifest", made, detected)
    assert detected == made, f"{made - detected} of {made} flips went undetected"


def test_pack_header_and_manifest_every_byte(tmp_path):
    _pack_flips(tmp_path, FAST_MASKS)


@pytest.mark.soak
def test_pack_header_and_manifest_every_byte_soak(tmp_path):
    _pack_flips(tmp_path, SOAK_MASKS)


# --- encrypted request, through the real action -------------------------------------------------

def _request_flips(w, masks) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))
    env = envelope.seal(w.request_key, "digits", w.user.principal_id, envelope.new_request_id(), envelope.REQUEST,
                        tensors.encode(X))
    raw = json_dumps({"value": env.to_json()})
    made = detected = 0
    for i, bad in _flips(raw, masks):
        made += 1
        r = http.request("POST", w.act.url + "/run", body=bad, headers={"Content-Type": "application/json"})
        assert r.status < 500, (i, r.status, r.data[:200])
        body = json_loads(r.data)
        if not (r.status == 200 and isinstance(body, dict) and "response" in body):
            detected += 1
    _record("encrypted request", made, detected)
    assert detected == made, f"{made - detected} of {made} flips were served"
    # and the untampered request is still served (the flips did not burn its request id)
    r = http.request("POST", w.act.url + "/run", body=raw, headers={"Content-Type": "application/json"})
    assert r.status == 200 and "response" in json_loads(r.data)


def test_encrypted_request_every_byte(w):
    _request_flips(w, FAST_MASKS)


@pytest.mark.soak
def test_encrypted_request_every_byte_soak(w):
    _request_flips(w, SOAK_MASKS)


# --- encrypted response, as the SDK reads it ----------------------------------------------------

class _Replay(BaseHTTPRequestHandler):
    """Answers every POST with the bytes it is given: the host, altering the action's answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    answer = b""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(self.answer) + self.answer)

    def log_message(self, *a) -> None:
        pass


@pytest.fixture()
def genuine_answer(w, monkeypatch):
    """One real answer of the action to a request whose id we fix, so it can be replayed."""
    rid = envelope.new_request_id()
    monkeypatch.setattr(envelope, "new_request_id", lambda: rid)
    env = envelope.seal(w.request_key, "digits", w.user.principal_id, rid, envelope.REQUEST, tensors.encode(X))
    r = urllib3.request("POST", w.act.url + "/run", body=json_dumps({"value": env.to_json()}),
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status == 200
    hygiene.remember("tampering input", X["image"].tobytes())
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield r.data, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _label_span(raw: bytes) -> set[int]:
    """Byte positions of the unauthenticated labels ("tee", "insecure_simulation") in the JSON."""
    out: set[int] = set()
    for key in (b'"insecure_simulation":', b'"tee":'):
        i = raw.index(key)
        j = i + len(key)
        while raw[j:j + 1] not in (b",", b"}"):
            j += 1
        out.update(range(i, j))
    return out


def _response_flips(w, answer, url, labels: bool, masks) -> None:
    raw = answer
    client = ActionClient(url, Timeouts(5, 30))
    _Replay.answer = raw
    client.infer("digits", w.user.principal_id, w.request_key, X)  # the genuine answer is accepted
    span = _label_span(raw)
    made = detected = 0
    for i, bad in _flips(raw, masks):
        if (i in span) != labels:
            continue
        made += 1
        _Replay.answer = bad
        try:
            client.infer("digits", w.user.principal_id, w.request_key, X)
        except SesemiError:
            detected += 1
    what = "encrypted response labels" if labels else "encrypted response"
    _record(what, made, detected)
    assert detected == made, f"{what}: {made - detected} of {made} flips were accepted"


def test_encrypted_response_every_byte(w, genuine_answer):
    _response_flips(w, *genuine_answer, labels=False, masks=FAST_MASKS)


def test_encrypted_response_labels_every_byte(w, genuine_answer):
    _response_flips(w, *genuine_answer, labels=True, masks=FAST_MASKS)


@pytest.mark.soak
def test_encrypted_response_every_byte_soak(w, genuine_answer):
    _response_flips(w, *genuine_answer, labels=False, masks=SOAK_MASKS)


def test_base64_padding_bits_are_checked():
    """Found by the request flips: a decoder ignores the bits before '=', so one
    flipped byte of a ciphertext's base64 left the message unchanged and served."""
    from sesemi.encoding import b64d

    assert b64d("QQ==") == b64d("QUI=")[:1] == b"A"
    for bad in ("QR==", "QUJ="):
        with pytest.raises(SesemiError, match="non-canonical"):
            b64d(bad)
