"""Issue 12 §3 property tests for every parser of untrusted bytes: sealed
models, packs, envelopes, tensors, HPKE boxes and public keys (hybrid and
X25519), evidence, signed-call headers, policies, the key-service pin. Whatever the input, the parser answers with one of the
project's errors (a 4xx at the HTTP layer), never another exception."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from sesemi import envelope, hpke_box, sealed_model, signed_call, tensors
from sesemi.attestation import EvidenceVerifier
from sesemi.attestation import sim
from sesemi.attestation.sim import SimBackend
from sesemi.client import KsPin
from sesemi.encoding import b64e
from sesemi.errors import SesemiError
from sesemi.identity import Identity
from sesemi.pack import Pack, build as build_pack
from sesemi.policy import EnclavePolicy

from .figures import count, twin

KEY = bytes(range(32))
MODEL = os.urandom(5000)  # sealed_model does not look inside; small keeps every case fast
SEALED = io.BytesIO()
sealed_model.seal_stream(io.BytesIO(MODEL), SEALED, KEY, "m", len(MODEL), chunk_size=4096)
SEALED = SEALED.getvalue()
TENSORS = tensors.encode({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=20)


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """Valid bytes, then flipped, cut, extended or spliced: close to the parser's real input."""
    def apply(ops):
        b = bytearray(base)
        for kind, pos, val in ops:
            pos %= max(1, len(b))
            if kind == 0 and b:
                b[pos] ^= val or 1
            elif kind == 1:
                del b[pos:]
            elif kind == 2:
                b[pos:pos] = bytes([val]) * (val % 7 + 1)
            elif kind == 3 and b:
                b[pos:pos + 8] = os.urandom(8)
        return bytes(b)
    ops = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4)
    return st.one_of(ops.map(apply), st.binary(max_size=300))


def _refuses(fn, *a) -> None:
    count("property cases: parsers")
    try:
        fn(*a)
    except SesemiError:
        pass


@twin(mutated(SEALED), fast=100, soak=3000)
def _sealed(blob):
    b = io.BytesIO(blob)
    _refuses(sealed_model.open_stream, b.read, len(blob), KEY, "m")


test_sealed_model, test_sealed_model_soak = _sealed


@twin(mutated(TENSORS), fast=100, soak=3000)
def _tensors(blob):
    _refuses(tensors.decode, blob)


test_tensors, test_tensors_soak = _tensors

_HPKE_KEY = hpke_box.new_private_key()
_HPKE_BOXES = [hpke_box.seal(KEY, _HPKE_KEY.public, b"ctx"),
               hpke_box.seal(KEY, _HPKE_KEY.public[-32:], b"ctx", allow_classical=True)]


@twin(st.one_of(*(mutated(b) for b in _HPKE_BOXES)), st.booleans(), fast=100, soak=3000)
def _hpke_box(blob, allow_classical):
    """A box that opens must be the genuine one (byte for byte); anything else is refused."""
    count("property cases: parsers")
    try:
        got = hpke_box.open_(blob, _HPKE_KEY, b"ctx", allow_classical=allow_classical)
    except SesemiError:
        return
    assert got == KEY and blob in _HPKE_BOXES


test_hpke_box, test_hpke_box_soak = _hpke_box


@twin(st.one_of(mutated(_HPKE_KEY.public), mutated(_HPKE_KEY.public[-32:])), st.booleans(), fast=100, soak=3000)
def _hpke_public(raw, allow_classical):
    _refuses(hpke_box.seal, KEY, raw, b"ctx", allow_classical)


test_hpke_public_key, test_hpke_public_key_soak = _hpke_public

_ENV = envelope.seal(KEY, "m", "u" * 64, "r" * 32, envelope.REQUEST, TENSORS).to_json()


def _env_variants():
    keys = st.sampled_from(sorted(_ENV) + ["extra"])
    return st.one_of(json_values, st.dictionaries(keys, json_values, max_size=7),
                     st.tuples(keys, json_values).map(lambda kv: {**_ENV, kv[0]: kv[1]}))


@twin(_env_variants(), fast=100, soak=3000)
def _envelope(obj):
    count("property cases: parsers")
    try:
        envelope.open_(KEY, envelope.Envelope.from_json(obj), envelope.REQUEST)
    except SesemiError:
        pass


test_envelope, test_envelope_soak = _envelope

_EVIDENCE = SimBackend("ab" * 32).evidence(bytes(64))


def _signed_sim(body: dict) -> dict:
    """Sim evidence with claims of our choosing, validly signed (the sim key is public),
    so the claims parser itself is what gets the input."""
    raw = json.dumps(body).encode()
    return {**_EVIDENCE, "body": b64e(raw), "signature": b64e(sim._KEY.sign(raw))}


def _evidence_variants():
    keys = st.sampled_from(sorted(_EVIDENCE))
    body_fields = st.dictionaries(st.sampled_from(["mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug",
                                                   "report_data", "issued_at", "x"]), json_values, max_size=8)
    return st.one_of(json_values, st.tuples(keys, json_values).map(lambda kv: {**_EVIDENCE, kv[0]: kv[1]}),
                     body_fields.map(_signed_sim),
                     st.binary(max_size=2000).map(lambda q: {"type": "sgx-dcap", "quote": b64e(q)}))


@twin(_evidence_variants(), fast=100, soak=3000)
def _evidence(ev):
    _refuses(EvidenceVerifier(allow_sim=True).claims, ev)


test_evidence, test_evidence_soak = _evidence

_ID = Identity.generate("p")
_HEADERS = signed_call.sign(_ID, "GET", "/v1/audit", "aa", b"", time.time(), 1)
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), max_size=60)


_timestamps = st.one_of(st.text("0123456789\u00b2\u00b3\u00b9\u0663\uff11", min_size=1, max_size=500),
                        st.integers(-(1 << 70), 1 << 70).map(str))


@twin(st.one_of(st.dictionaries(st.sampled_from(sorted(_HEADERS)), _header_text, max_size=4),
                _timestamps.map(lambda ts: {signed_call.H_TIMESTAMP: ts}),
                _timestamps.map(lambda seq: {signed_call.H_SEQ: seq})), fast=100, soak=3000)
def _signed_headers(changes):
    _refuses(signed_call.verify, {**_HEADERS, **changes}, "GET", "/v1/audit", "aa", b"", time.time(),
             lambda pid: _ID.public_raw if pid == _ID.principal_id else None, lambda *a: True)


test_signed_call_headers, test_signed_call_headers_soak = _signed_headers

_POLICY = EnclavePolicy(mrenclave=("ab" * 32,)).to_json()


@twin(st.one_of(json_values, st.tuples(st.sampled_from(sorted(_POLICY) + ["x"]), json_values)
                .map(lambda kv: {**_POLICY, kv[0]: kv[1]})), fast=100, soak=3000)
def _policy(doc):
    _refuses(EnclavePolicy.from_json, doc)


test_policy, test_policy_soak = _policy


def _pack_bytes(tmp: Path) -> bytes:
    (tmp / "m.sealed").write_bytes(SEALED)
    build_pack(tmp / "p.pack", [tmp / "m.sealed"])
    return (tmp / "p.pack").read_bytes()


_PACK = _pack_bytes(Path(__import__("tempfile").mkdtemp()))


@twin(mutated(_PACK), fast=100, soak=2000)
def _pack(blob):
    import tempfile

    count("property cases: parsers")
    with tempfile.NamedTemporaryFile(suffix=".pack") as f:
        f.write(blob)
        f.flush()
        try:
            p = Pack(f.name)
        except SesemiError:
            return
        try:
            for mid in p.model_ids:
                r = p.reader(mid)
                try:
                    sealed_model.open_stream(r.read, r.length, KEY, mid)
                    r.verify()
                except SesemiError:
                    pass
        finally:
            p.close()


test_pack, test_pack_soak = _pack
