"""Post-quantum key transport: every box kind under MLKEM768-X25519 HPKE, the
X25519-only downgrade refused everywhere (unless the key service runs with
--insecure-allow-classical-kem, which its measurement shows), tampered KEM
ciphertexts refused, the enclave's whole hybrid key bound by its evidence, the
migration of an X25519-era secrets file, and the hybrid KEM checked against
published X-Wing vectors and the tests' own second implementation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from app.enclave_session import EnclaveSession
from keyservice.cluster import seal_secrets
from keyservice.config import KeyServiceConfig
from keyservice.sealing import ServiceSecrets
from keyservice.service import KeyService
from sesemi import hpke_box, ks_response
from sesemi.attestation import EvidenceVerifier
from sesemi.attestation.claims import report_data_binding
from sesemi.attestation.sim import SimBackend
from sesemi.client import KsPin, KeyServiceClient
from sesemi.encoding import b64d, b64e, canonical_json, json_loads
from sesemi.errors import AttestationError, FormatError, IntegrityError
from sesemi.identity import Identity
from sesemi.measure import keyservice_mrenclave

from . import xwing_ref

MR = "ab" * 32
SEAL = "5e" * 16
VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "xwing" / "vectors.json").read_text())["vectors"]
HYBRID_HEADER = bytes.fromhex("02647a")
CLASSICAL_NAMED = "X25519 alone"


def _ks(tmp_path: Path, **kw) -> KeyService:
    return KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", insecure_sim_attestation=True, **kw))


def _components(key: hpke_box.PrivateKey) -> tuple[MLKEM768PrivateKey, X25519PrivateKey]:
    return MLKEM768PrivateKey.from_seed_bytes(key.raw[:64]), X25519PrivateKey.from_private_bytes(key.raw[64:])


def _classical_box(plain: bytes, to_hybrid_public: bytes, info: bytes) -> bytes:
    """A box made with X25519 alone, to the X25519 half of a hybrid key."""
    return hpke_box.seal(plain, to_hybrid_public[-32:], info, allow_classical=True)


def _token(ks: KeyService, pub: bytes, bound: bytes | None = None) -> str:
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(MR).evidence(report_data_binding(nonce, bound or pub))
    return ks.attest_enclave({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})["token"]


def _published(ks: KeyService, classical: bool = False) -> tuple[Identity, Identity, bytes, bytes]:
    owner, user = Identity.generate("o"), Identity.generate("u")
    for who in (owner, user):
        ks.register_principal(who.public_raw)
    mk, rk = b"M" * 32, b"R" * 32
    seal = _classical_box if classical else hpke_box.seal
    ks.put_model(owner.principal_id, "m", {
        "wrapped_key": b64e(seal(mk, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, SEAL))),
        "policy": {"mrenclave": [MR]}, "seal_id": SEAL})
    ks.grant(owner.principal_id, "m", user.principal_id)
    ks.put_request_key(user.principal_id, "m", {
        "wrapped_key": b64e(seal(rk, ks.hpke_public, hpke_box.info("request-key", "m", user.principal_id)))})
    return owner, user, mk, rk


# --- round trips --------------------------------------------------------------------------------

def test_uploads_and_releases_round_trip_in_hybrid_boxes(tmp_path):
    ks = _ks(tmp_path)
    assert len(ks.hpke_public) == 1216
    _, user, mk, rk = _published(ks)
    enclave = hpke_box.new_private_key()
    out = ks.release_keys(_token(ks, enclave.public), {"model_id": "m", "seal_id": SEAL, "user_id": user.principal_id})
    model_box, request_box = b64d(out["model_key"]), b64d(out["request_key"])
    for box in (model_box, request_box):
        assert box[:3] == HYBRID_HEADER and len(box) == 3 + 1120 + 32 + 16
    assert hpke_box.open_(model_box, enclave, hpke_box.info("release-model-key", "m", SEAL)) == mk
    assert hpke_box.open_(request_box, enclave, hpke_box.info("release-request-key", "m", user.principal_id,
                                                              str(out["request_key_version"]))) == rk


def test_replica_join_secrets_round_trip_in_a_hybrid_box(tmp_path):
    s = ServiceSecrets.load_or_create(tmp_path / "s")
    joining = hpke_box.new_private_key()
    box = b64d(seal_secrets(s, joining.public, s.hpke_public))
    assert box[:3] == HYBRID_HEADER
    plain = json_loads(hpke_box.open_(box, joining, hpke_box.info("cluster-join", s.hpke_public.hex())))
    assert b64d(plain["hpke_private"]) == s.hpke_private and len(s.hpke_private) == 96


def test_client_wraps_hybrid_and_pins_the_hybrid_key(tmp_path):
    ks = _ks(tmp_path)
    pin = KsPin("http://127.0.0.1:9", ks.hpke_public.hex(), "sim", MR, MR, 1, True, signing_public_key="00" * 32)
    box = b64d(KeyServiceClient(pin)._wrap(b"k" * 32, "model-key", "m", "o", SEAL))
    assert box[:3] == HYBRID_HEADER
    assert ks._unwrap_upload(b64e(box), "model-key", "m", "o", SEAL) == b"k" * 32
    assert pin.audience == ks.audience and len(ks.audience) == 64  # the key id, not 2,432 hex digits


# --- no downgrade -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["model-key", "request-key"])
def test_x25519_only_uploads_are_refused_naming_the_suite(tmp_path, kind):
    ks = _ks(tmp_path)
    owner, user, _, _ = _published(ks)
    pid = owner.principal_id if kind == "model-key" else user.principal_id
    context = (kind, "m", pid, SEAL) if kind == "model-key" else (kind, "m", pid)
    box = b64e(_classical_box(b"k" * 32, ks.hpke_public, hpke_box.info(*context)))
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        if kind == "model-key":
            ks.put_model(pid, "m", {"wrapped_key": box, "policy": {"mrenclave": [MR]}, "seal_id": SEAL})
        else:
            ks.put_request_key(pid, "m", {"wrapped_key": box})


def test_x25519_only_enclave_gets_no_release(tmp_path):
    ks = _ks(tmp_path)
    _published(ks)
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        _token(ks, hpke_box.new_private_key(hpke_box.CLASSICAL).public)


def test_token_earned_with_the_flag_releases_nothing_without_it(tmp_path):
    ks = _ks(tmp_path, insecure_allow_classical_kem=True)
    _published(ks)
    token = _token(ks, hpke_box.new_private_key(hpke_box.CLASSICAL).public)
    ks = _ks(tmp_path)  # restarted without the flag: tokens outlive restarts
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        ks.release_keys(token, {"model_id": "m", "seal_id": SEAL})


def test_x25519_only_replica_gets_no_secrets(tmp_path):
    s = ServiceSecrets.load_or_create(tmp_path / "s")
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        seal_secrets(s, hpke_box.new_private_key(hpke_box.CLASSICAL).public, s.hpke_public)
    ks = _ks(tmp_path, insecure_allow_classical_kem=True)  # not even with the flag: joins are hybrid only
    pub = hpke_box.new_private_key(hpke_box.CLASSICAL).public
    nonce = bytes.fromhex(ks.new_enclave_nonce()["nonce"])
    ev = SimBackend(ks.mrenclave).evidence(report_data_binding(nonce, pub))
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        ks.admit_replica({"nonce": nonce.hex(), "evidence": ev, "public_key": b64e(pub)})


def test_client_refuses_a_key_service_presenting_an_x25519_only_key(tmp_path):
    ks = _ks(tmp_path)
    nonce = b"n" * 32
    x_only = hpke_box.new_private_key(hpke_box.CLASSICAL).public
    body = {**ks.self_attestation(nonce), "hpke_public_key": b64e(x_only)}
    body["evidence"] = ks.tee.evidence(report_data_binding(nonce, ks_response.identity(x_only, ks.signing_public)))
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        ks_response.verify_attestation(body, nonce, EvidenceVerifier(allow_sim=True), "ks attest")
    claims, pub, _ = ks_response.verify_attestation(ks.self_attestation(nonce), nonce,
                                                    EvidenceVerifier(allow_sim=True), "ks attest")
    assert pub == ks.hpke_public
    # A client holding an X25519-only pin does not wrap to it.
    pin = KsPin("http://127.0.0.1:9", x_only.hex(), "sim", MR, MR, 1, True, signing_public_key="00" * 32)
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        KeyServiceClient(pin)._wrap(b"k" * 32, "model-key", "m", "o", SEAL)


def test_key_service_identity_binds_its_suite(tmp_path):
    ks = _ks(tmp_path)
    nonce = b"n" * 32
    att = ks.self_attestation(nonce)
    assert att["hpke_suite"] == "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
    # The same bytes under another reading (key || signing key, the old identity) do not verify.
    old_binding = report_data_binding(nonce, ks.hpke_public + ks.signing_public)
    forged = {**att, "evidence": ks.tee.evidence(old_binding)}
    with pytest.raises(AttestationError):
        ks_response.verify_attestation(forged, nonce, EvidenceVerifier(allow_sim=True), "ks attest")


def test_enclave_refuses_a_classical_release_box():
    session = EnclaveSession(tee=None, ks=None, key_ttl_s=60)
    box = _classical_box(b"k" * 32, session.public_key, hpke_box.info("release-model-key", "m", SEAL))
    with pytest.raises(hpke_box.Downgrade, match=CLASSICAL_NAMED):
        session._unwrap(b64e(box), "release-model-key", "m", SEAL)
    good = hpke_box.seal(b"k" * 32, session.public_key, hpke_box.info("release-model-key", "m", SEAL))
    assert session._unwrap(b64e(good), "release-model-key", "m", SEAL) == b"k" * 32


def test_the_flag_accepts_classical_uploads_and_enclaves_and_is_measured(tmp_path):
    ks = _ks(tmp_path, insecure_allow_classical_kem=True)
    _, user, mk, rk = _published(ks, classical=True)
    enclave = hpke_box.new_private_key(hpke_box.CLASSICAL)
    out = ks.release_keys(_token(ks, enclave.public), {"model_id": "m", "seal_id": SEAL, "user_id": user.principal_id})
    box = b64d(out["model_key"])
    assert box[:3] == bytes.fromhex("020020")
    assert hpke_box.open_(box, enclave, hpke_box.info("release-model-key", "m", SEAL), allow_classical=True) == mk
    assert ks.self_attestation(b"n" * 32)["insecure_allow_classical_kem"] is True
    flagged = KeyServiceConfig(db_path=tmp_path / "x.db", insecure_allow_classical_kem=True)
    plain = dataclasses.replace(flagged, insecure_allow_classical_kem=False)
    assert keyservice_mrenclave(flagged.trusted()) != keyservice_mrenclave(plain.trusted())


# --- tampering and binding ----------------------------------------------------------------------

@pytest.mark.parametrize("where,offset", [("ML-KEM ciphertext", 3 + 17), ("ML-KEM ciphertext end", 3 + 1087),
                                          ("X25519 ciphertext", 3 + 1088), ("X25519 ciphertext end", 3 + 1119)])
def test_tampered_kem_ciphertext_is_refused(where, offset):
    key = hpke_box.new_private_key()
    box = bytearray(hpke_box.seal(b"k" * 32, key.public, b"ctx"))
    box[offset] ^= 0x01
    with pytest.raises(IntegrityError, match="does not open"):
        hpke_box.open_(bytes(box), key, b"ctx")


def test_relabelled_suite_and_old_format_are_refused():
    key = hpke_box.new_private_key()
    box = hpke_box.seal(b"k" * 32, key.public, b"ctx")
    relabelled = bytes.fromhex("020020") + box[3:]
    with pytest.raises(hpke_box.Downgrade):
        hpke_box.open_(relabelled, key, b"ctx")
    with pytest.raises(IntegrityError):  # allowed, it is still refused: info binds the suite
        hpke_box.open_(relabelled, key, b"ctx", allow_classical=True)
    classical = _classical_box(b"k" * 32, key.public, b"ctx")
    with pytest.raises(IntegrityError):  # relabelled as hybrid: the lengths and the info differ
        hpke_box.open_(HYBRID_HEADER + classical[3:], key, b"ctx")
    v1 = b"\2"
    while v1[0] == hpke_box.FORMAT_VERSION:  # a v1 box: X25519 HPKE output, no header
        v1 = hpke_box.KEMS[hpke_box.CLASSICAL].suite.encrypt(b"k" * 32, X25519PrivateKey.generate().public_key())
    with pytest.raises(IntegrityError, match="format v1"):
        hpke_box.open_(v1, key, b"ctx")


def test_enclave_whose_evidence_binds_another_hybrid_key_gets_nothing(tmp_path):
    ks = _ks(tmp_path)
    _published(ks)
    bound = hpke_box.new_private_key()
    # Same X25519 half, another ML-KEM half: the binding covers the whole key.
    m = MLKEM768PrivateKey.generate()
    presented = m.public_key().public_bytes_raw() + bound.public[1184:]
    with pytest.raises(AttestationError, match="report_data|REPORT_DATA|bind"):
        _token(ks, presented, bound=bound.public)
    with pytest.raises(AttestationError):
        _token(ks, hpke_box.new_private_key().public, bound=bound.public)


def test_report_data_binds_a_hash_of_the_whole_key():
    key = hpke_box.new_private_key().public
    flipped = key[:100] + bytes([key[100] ^ 1]) + key[101:]
    assert report_data_binding(b"n" * 32, key) != report_data_binding(b"n" * 32, flipped)
    assert len(report_data_binding(b"n" * 32, key)) == 64


# --- migration ----------------------------------------------------------------------------------

def test_x25519_era_secrets_file_gets_a_hybrid_key_and_stored_keys_still_release(tmp_path):
    ks = _ks(tmp_path)
    _, user, mk, rk = _published(ks)
    path = ks.config.secrets_path
    d = json_loads(path.read_bytes())
    # The file as an X25519-era key service wrote it: a 32-byte HPKE key.
    d["hpke_private"] = b64e(X25519PrivateKey.generate().private_bytes_raw())
    path.write_bytes(canonical_json(d))
    storage, signing = ks.secrets.storage_key, ks.secrets.signing_private
    ks = _ks(tmp_path)
    assert ks.secrets.kem_upgraded and len(ks.hpke_public) == 1216
    assert (ks.secrets.storage_key, ks.secrets.signing_private) == (storage, signing)
    assert len(b64d(json_loads(path.read_bytes())["hpke_private"])) == 96  # written back
    enclave = hpke_box.new_private_key()
    out = ks.release_keys(_token(ks, enclave.public), {"model_id": "m", "seal_id": SEAL, "user_id": user.principal_id})
    assert hpke_box.open_(b64d(out["model_key"]), enclave, hpke_box.info("release-model-key", "m", SEAL)) == mk
    assert not _ks(tmp_path).secrets.kem_upgraded  # once


def test_x25519_era_pin_asks_to_re_attest(tmp_path):
    from bundle_tool.home import Home
    from sesemi.errors import PinMismatch

    home = Home(tmp_path)
    home.save_pin(KsPin("http://127.0.0.1:9", "ab" * 32, "sim", MR, MR, 1, True, signing_public_key="00" * 32))
    with pytest.raises(PinMismatch, match="ks attest"):
        home.pin()


def test_malformed_hybrid_keys_are_format_errors():
    for bad in (b"", b"\1" * 33, b"\1" * 1215):
        with pytest.raises(FormatError):
            hpke_box.seal(b"k", bad, b"ctx")
    with pytest.raises(FormatError, match="low-order"):
        hpke_box.seal(b"k", hpke_box.new_private_key().public[:1184] + bytes(32), b"ctx")
    with pytest.raises(FormatError):
        hpke_box.load_private(b"\1" * 95)


def test_backend_check_passes_here():
    hpke_box.check_backend()


# --- the hybrid KEM against published vectors and a second implementation -------------------------

@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["sk"][:8])
def test_xwing_known_answers(vector):
    """Key expansion and decapsulation with `cryptography`'s ML-KEM-768 and X25519
    and our combiner give the published public key and shared secret; and the
    hybrid HPKE of `cryptography` encrypts to that published key so that the
    second implementation opens it (the KEM is X-Wing, not a look-alike)."""
    sk_m, sk_x = xwing_ref.expand(bytes.fromhex(vector["sk"]))
    assert xwing_ref.public_of(sk_m, sk_x).hex() == vector["pk"]
    assert xwing_ref.decapsulate(bytes.fromhex(vector["ct"]), sk_m, sk_x).hex() == vector["ss"]
    info = hpke_box._full_info(hpke_box.KEMS[hpke_box.HYBRID], b"kat")
    box = hpke_box.seal(b"k" * 32, bytes.fromhex(vector["pk"]), b"kat")
    assert xwing_ref.open_(sk_m, sk_x, info, box[3:]) == b"k" * 32


def test_hybrid_hpke_interoperates_with_the_second_implementation():
    key = hpke_box.new_private_key()
    sk_m, sk_x = _components(key)
    for plain in (b"", b"k" * 32, bytes(range(256)) * 9):
        info = hpke_box._full_info(hpke_box.KEMS[hpke_box.HYBRID], hpke_box.info("release-model-key", "m", SEAL))
        ours = hpke_box.seal(plain, key.public, hpke_box.info("release-model-key", "m", SEAL))
        assert len(ours) == 3 + 1120 + len(plain) + 16
        assert xwing_ref.open_(sk_m, sk_x, info, ours[3:]) == plain
        theirs = HYBRID_HEADER + xwing_ref.seal(key.public, info, plain)
        assert hpke_box.open_(theirs, key, hpke_box.info("release-model-key", "m", SEAL)) == plain
        with pytest.raises(IntegrityError):
            hpke_box.open_(theirs, key, hpke_box.info("release-model-key", "m2", SEAL))
