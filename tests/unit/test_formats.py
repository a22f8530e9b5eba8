"""Sealed models, packs, envelopes, tensors, HPKE boxes: round trips and tampering."""

import io
import os

import numpy as np
import pytest

from sesemi import envelope, hpke_box, sealed_model, tensors
from sesemi.errors import FormatError, IntegrityError, NotFound
from sesemi.pack import Pack, build


def _seal(data: bytes, model_id="m1", chunk=4096):
    key = sealed_model.new_model_key()
    out = io.BytesIO()
    sealed_model.seal_stream(io.BytesIO(data), out, key, model_id, len(data), chunk)
    return key, out.getvalue()


def _open(blob: bytes, key: bytes, model_id="m1"):
    return sealed_model.open_stream(io.BytesIO(blob).read, len(blob), key, model_id)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_sealed_model_round_trip(size):
    data = os.urandom(size)
    key, blob = _seal(data)
    assert _open(blob, key) == data
    assert data[:64] not in blob or size < 16


def test_sealed_model_every_chunk_is_authenticated():
    data = os.urandom(3 * 4096)
    key, blob = _seal(data)
    header_len = len(sealed_model.read_header(io.BytesIO(blob).read).raw)
    for pos in (header_len + 3, header_len + 12 + 100, len(blob) - 1, len(blob) - 4200):
        bad = bytearray(blob)
        bad[pos] ^= 1
        with pytest.raises(IntegrityError):
            _open(bytes(bad), key)


def test_sealed_model_header_tamper_refused():
    key, blob = _seal(os.urandom(5000))
    # change the model id in the header: bound by the chunk AAD
    key2, blob2 = _seal(os.urandom(5000), model_id="m2")
    with pytest.raises(IntegrityError):
        _open(blob2, key2, model_id="m1")
    # flip a byte of the chunk size field (offset 12): length check or AAD catches it
    bad = bytearray(blob)
    bad[14] ^= 0x10
    with pytest.raises((IntegrityError, FormatError)):
        _open(bytes(bad), key)


def test_sealed_model_truncation_and_wrong_key():
    data = os.urandom(3 * 4096)
    key, blob = _seal(data)
    chunk_bytes = 12 + 4096 + 16
    with pytest.raises(IntegrityError):
        _open(blob[:-chunk_bytes], key)
    with pytest.raises(IntegrityError):
        _open(blob, sealed_model.new_model_key())


def test_sealed_chunks_cannot_be_reordered():
    data = os.urandom(2 * 4096)
    key, blob = _seal(data)
    h = len(sealed_model.read_header(io.BytesIO(blob).read).raw)
    c = 12 + 4096 + 16
    swapped = blob[:h] + blob[h + c:h + 2 * c] + blob[h:h + c]
    with pytest.raises(IntegrityError):
        _open(swapped, key)


def test_pack_round_trip_and_tamper(tmp_path):
    paths = []
    keys = {}
    for mid in ("a", "b"):
        key = sealed_model.new_model_key()
        src = tmp_path / f"{mid}.bin"
        src.write_bytes(os.urandom(10000))
        sealed_model.seal_file(src, tmp_path / f"{mid}.sealed", key, mid, chunk_size=4096)
        paths.append(tmp_path / f"{mid}.sealed")
        keys[mid] = (key, src.read_bytes())
    build(tmp_path / "p.pack", paths)
    pack = Pack(tmp_path / "p.pack")
    assert pack.model_ids == ["a", "b"]
    for mid, (key, data) in keys.items():
        blob = pack.read_sealed(mid)
        assert sealed_model.open_stream(io.BytesIO(blob).read, len(blob), key, mid) == data
    with pytest.raises(NotFound):
        pack.entry("c")
    digest = pack.manifest_digest
    pack.close()

    raw = bytearray((tmp_path / "p.pack").read_bytes())
    raw[-5] ^= 1  # inside model b's ciphertext
    (tmp_path / "bad.pack").write_bytes(bytes(raw))
    bad = Pack(tmp_path / "bad.pack")
    assert bad.manifest_digest == digest
    bad.read_sealed("a")
    with pytest.raises(IntegrityError, match="tampered"):
        bad.read_sealed("b")
    (tmp_path / "short.pack").write_bytes(bytes(raw[:-1]))
    with pytest.raises(IntegrityError):
        Pack(tmp_path / "short.pack")
    (tmp_path / "junk.pack").write_bytes(b"not a pack at all")
    with pytest.raises(FormatError):
        Pack(tmp_path / "junk.pack")


def test_envelope_binds_context():
    key = envelope.new_request_key()
    env = envelope.seal(key, "m", "u", "r1", envelope.REQUEST, b"secret input")
    assert envelope.open_(key, envelope.Envelope.from_json(env.to_json()), envelope.REQUEST) == b"secret input"
    for field, value in (("model_id", "m2"), ("user_id", "u2"), ("request_id", "r2")):
        moved = envelope.Envelope(**{**env.__dict__, field: value})
        with pytest.raises(IntegrityError):
            envelope.open_(key, moved, envelope.REQUEST)
    with pytest.raises(IntegrityError):  # a request replayed as a response
        envelope.open_(key, env, envelope.RESPONSE)
    e2 = envelope.seal(key, "m", "u", "r1", envelope.REQUEST, b"secret input")
    assert e2.nonce != env.nonce


def test_envelope_rejects_malformed():
    for bad in (None, [], {"v": 3}, {"v": 3, "model_id": "m"},
                {"v": 3, "model_id": "m", "user_id": "u", "request_id": "r", "nonce": "!!", "ciphertext": "AA=="},
                {"v": 1, "model_id": "m", "user_id": "u", "request_id": "r", "nonce": "AAAAAAAAAAAAAAAA",
                 "ciphertext": "AAAAAAAAAAAAAAAAAAAAAA=="}):
        with pytest.raises(FormatError):
            envelope.Envelope.from_json(bad)


def test_tensors_round_trip_and_malformed():
    t = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([1, 2], dtype=np.int64),
         "s": np.float32(3.5)}
    back = tensors.decode(tensors.encode(t))
    for k in t:
        np.testing.assert_array_equal(back[k], t[k])
        assert back[k].dtype == np.asarray(t[k]).dtype
    raw = tensors.encode(t)
    for bad in (raw[:-1], raw + b"x", b"XXXX" + raw[4:], raw[:10]):
        with pytest.raises(FormatError):
            tensors.decode(bad)
    with pytest.raises(FormatError):
        tensors.encode({"o": np.array([object()])})


def test_hpke_box_binds_info():
    sk = hpke_box.new_private_key()
    box = hpke_box.seal(b"k" * 32, hpke_box.public_raw(sk), hpke_box.info("model-key", "m", "o"))
    assert hpke_box.open_(box, sk, hpke_box.info("model-key", "m", "o")) == b"k" * 32
    with pytest.raises(IntegrityError):
        hpke_box.open_(box, sk, hpke_box.info("model-key", "m2", "o"))
    with pytest.raises(IntegrityError):
        hpke_box.open_(box, hpke_box.new_private_key(), hpke_box.info("model-key", "m", "o"))


# --- item 28: one encoding per value -------------------------------------------

@pytest.mark.parametrize("text", ["QR==", "QQ", "QQ=", "Q Q==", "QQ==\n", "QUI", "QUJ=", "-_8=", "QQ==QQ=="])
def test_only_canonical_base64_decodes(text):
    from sesemi.encoding import b64d

    with pytest.raises(FormatError):
        b64d(text, "f")
    with pytest.raises(FormatError):
        b64d(text.encode(), "f")


def test_canonical_base64_round_trips():
    from sesemi.encoding import b64d, b64e

    for n in range(0, 40):
        data = os.urandom(n)
        assert b64d(b64e(data)) == data and b64d(b64e(data).encode()) == data


@pytest.mark.parametrize("text", ["AB", "ab cd", " abcd", "abc", "0x12", "éé"])
def test_only_canonical_hex_decodes(text):
    from sesemi.encoding import hexd

    with pytest.raises(FormatError):
        hexd(text, "f")
    assert hexd("00ff", "f") == b"\x00\xff"


@pytest.mark.parametrize("v", [True, 1.0, "1", None, [1]])
def test_envelope_version_has_an_exact_type(v):
    from sesemi import envelope

    env = envelope.seal(envelope.new_request_key(), "m", "u", "r", envelope.REQUEST, b"x").to_json()
    envelope.Envelope.from_json(env)
    with pytest.raises(FormatError, match="version"):
        envelope.Envelope.from_json({**env, "v": v})


@pytest.mark.parametrize("field,value", [("offset", "0"), ("length", True), ("plaintext_len", 1.0),
                                         ("model_id", 5), ("sha256", None), ("seal_id", 0), ("extra", 1)])
def test_pack_manifest_fields_have_exact_types(field, value):
    from sesemi.pack import _parse_manifest
    from sesemi.encoding import canonical_json

    entry = {"model_id": "m", "offset": 0, "length": 10, "sha256": "00" * 32, "plaintext_len": 1,
             "seal_id": "00" * 16}
    _parse_manifest(canonical_json({"version": 2, "models": [entry]}), 10)
    with pytest.raises(FormatError):
        _parse_manifest(canonical_json({"version": 2, "models": [{**entry, field: value}]}), 10)
    with pytest.raises(FormatError):
        _parse_manifest(canonical_json({"version": True, "models": [entry]}), 10)


def test_two_seals_under_one_key_do_not_splice(tmp_path):
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(3 * 4096))
    key = sealed_model.new_model_key()
    a = sealed_model.seal_file(src, tmp_path / "a.sealed", key, "m", chunk_size=4096)
    b = sealed_model.seal_file(src, tmp_path / "b.sealed", key, "m", chunk_size=4096)
    assert a.seal_id != b.seal_id and a.raw != b.raw
    ra, rb = (tmp_path / "a.sealed").read_bytes(), (tmp_path / "b.sealed").read_bytes()
    spliced = ra[:len(a.raw)] + rb[len(b.raw):]  # a's header, b's chunks
    with pytest.raises(IntegrityError, match="chunk 0"):
        sealed_model.open_stream(io.BytesIO(spliced).read, len(spliced), key, "m")
    assert sealed_model.open_stream(io.BytesIO(ra).read, len(ra), key, "m") == src.read_bytes()


def test_every_envelope_message_has_its_own_key():
    """Item 27: no AES key encrypts more than one message, so NIST SP 800-38D's
    2**32 random-nonce budget per key cannot be reached by inference volume."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    rk = envelope.new_request_key()
    a = envelope.seal(rk, "m", "u", "r1", envelope.REQUEST, b"x")
    b = envelope.seal(rk, "m", "u", "r1", envelope.RESPONSE, b"x")
    c = envelope.seal(rk, "m", "u", "r2", envelope.REQUEST, b"x")
    keys = {envelope.message_key(rk, e.model_id, e.user_id, e.request_id, d, e.nonce)
            for e, d in ((a, envelope.REQUEST), (b, envelope.RESPONSE), (c, envelope.REQUEST))}
    assert len(keys) == 3 and rk not in keys
    aad = envelope.aad("m", "u", "r1", envelope.REQUEST)
    with pytest.raises(InvalidTag):  # the request key itself does not open it
        AESGCM(rk).decrypt(a.nonce, a.ciphertext, aad)
    assert envelope.open_(rk, a, envelope.REQUEST) == b"x"
    assert envelope.Envelope.from_json(a.to_json()).to_json()["v"] == envelope.VERSION == 4


def test_answer_labels_are_inside_and_missing_reads_as_simulated():
    """Envelope v3: the labels travel in the ciphertext."""
    from sesemi import answer
    from sesemi.encoding import json_dumps
    import struct

    a = answer.decode(answer.encode("occlum", False, b"outputs"))
    assert (a.tee, a.insecure_simulation, a.body, a.error) == ("occlum", False, b"outputs", None)
    bare = json_dumps({})
    missing = answer.decode(struct.pack(">I", len(bare)) + bare + b"x")
    assert missing.insecure_simulation is True and missing.tee == "?"
    err = answer.decode(answer.encode("sim", True, error={"kind": "FormatError", "status": 400, "message": "m"}))
    assert err.error["status"] == 400 and err.body == b""
    for bad in (b"", b"\x00\x00\x10\x00{}", struct.pack(">I", 2) + b"[]",
                struct.pack(">I", 12) + b'{"tee":true}', struct.pack(">I", 10) + b'{"other":1}',
                struct.pack(">I", 29) + b'{"insecure_simulation":"no"}'):
        with pytest.raises(FormatError):
            answer.decode(bad)


def test_base64_accepts_exactly_what_re_encodes_to_itself():
    """b64d's fast canonical check (last quantum only) against the definition:
    accepted iff valid strict base64 whose re-encoding is the input."""
    import base64
    import random

    from sesemi.encoding import b64d, b64e

    alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n -_"
    rnd = random.Random(28)
    for _ in range(20000):
        t = list(b64e(os.urandom(rnd.randrange(0, 10))))
        for _ in range(rnd.randrange(0, 3)):
            op = rnd.randrange(3)
            if op == 0 and t:
                t[rnd.randrange(len(t))] = rnd.choice(alpha)
            elif op == 1:
                t.insert(rnd.randrange(len(t) + 1), rnd.choice(alpha))
            elif t:
                del t[rnd.randrange(len(t))]
        text = "".join(t)
        try:
            expected = b64e(base64.b64decode(text, validate=True)) == text
        except ValueError:
            expected = False
        try:
            b64d(text)
            accepted = True
        except FormatError:
            accepted = False
        assert accepted == expected, text
