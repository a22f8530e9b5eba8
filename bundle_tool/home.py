"""Client state under $SESEMI_HOME (default ~/.sesemi), all files 0600.

    identities/NAME.pem             Ed25519 identity keys
    model_keys/MODEL_ID.json        model keys made by `sesemi model seal`
    request_keys/PID/MODEL_ID.key   request keys made by `sesemi user enroll` (base64 key, version)
    ks_pin.json                     the attested key service
    call_seq/PID                    the last signed-call sequence number of each identity
    dcap_marks.json                 the DCAP time floor and TCB evaluation numbers `ks attest` has verified
    ks_state.json                   the last signed checkpoint accepted of each key service's log
    receipts/LEAF-EVENT.json        inclusion proofs of this home's writes (`sesemi ks receipt verify`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sesemi.call_seq import FileCallCounter
from sesemi.ks_state import FileStateWitness
from sesemi.client import KsPin
from sesemi.encoding import b64d, b64e, canonical_json, json_loads
from sesemi import hpke_box
from sesemi.errors import FormatError, NotFound, PinMismatch, SesemiError
from sesemi.identity import Identity, write_private_file
from sesemi.names import check_local_name, check_model_id


class FileMarks:
    """DCAP marks (sesemi.attestation.dcap.Marks) in one file: `ks attest` runs
    keep the time floor and evaluation numbers they have verified, so a clock
    set back on a later run does not revive expired collateral either."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, float]:
        try:
            doc = json_loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise FormatError(f"{self.path}: not a marks file (restore or delete it)") from None
        if not isinstance(doc, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in doc.values()):
            raise FormatError(f"{self.path}: not a marks file (restore or delete it)")
        return doc

    def mark(self, name: str) -> float | None:
        return self._load().get(name)

    def raise_mark(self, name: str, value: float) -> float:
        marks = self._load()
        if name in marks and marks[name] >= value:
            return marks[name]
        marks[name] = value
        write_private_file(self.path, canonical_json(marks))
        return value


class Home:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root or os.environ.get("SESEMI_HOME") or Path.home() / ".sesemi")

    # identities
    def _identity_path(self, name: str) -> Path:
        check_local_name(name, "identity name")
        return self.root / "identities" / f"{name}.pem"

    def new_identity(self, name: str) -> Identity:
        path = self._identity_path(name)
        if path.exists():
            raise SesemiError(f"identity {name!r} already exists in {self.root}")
        ident = Identity.generate(name)
        ident.save(path)
        return ident

    def identity(self, name: str) -> Identity:
        path = self._identity_path(name)
        if not path.exists():
            raise NotFound(f"no identity {name!r} in {self.root} (create it: sesemi identity new {name})")
        return Identity.load(name, path)

    def dcap_marks(self) -> FileMarks:
        return FileMarks(self.root / "dcap_marks.json")

    # model keys
    def _model_key_path(self, model_id: str) -> Path:
        check_model_id(model_id)
        return self.root / "model_keys" / f"{model_id}.json"

    def save_model_key(self, model_id: str, key: bytes, seal_id: str | None = None) -> None:
        doc = {"model_id": model_id, "key": b64e(key)}
        if seal_id is not None:
            doc["seal_id"] = seal_id
        write_private_file(self._model_key_path(model_id), canonical_json(doc))

    def model_seal_id(self, model_id: str) -> str:
        """The seal id of the model's last `sesemi model seal`: published with its key."""
        path = self._model_key_path(model_id)
        seal_id = json_loads(path.read_bytes()).get("seal_id") if path.exists() else None
        if not isinstance(seal_id, str):
            raise NotFound(f"no seal id for model {model_id!r} in {self.root} (seal it: sesemi model seal)")
        return seal_id

    def model_key(self, model_id: str) -> bytes:
        path = self._model_key_path(model_id)
        if not path.exists():
            raise NotFound(f"no key for model {model_id!r} in {self.root} (seal it first: sesemi model seal)")
        try:
            doc = json_loads(path.read_bytes())
            key = b64d(doc["key"], "model key") if isinstance(doc, dict) else b""
        except (ValueError, KeyError, FormatError):
            key = b""
        if len(key) != 32:
            raise FormatError(f"{path} is damaged: it holds no 32-byte model key")
        return key

    # request keys
    def _request_key_path(self, pid: str, model_id: str) -> Path:
        self._model_key_path(model_id)
        return self.root / "request_keys" / pid / f"{model_id}.key"

    def save_request_key(self, pid: str, model_id: str, key: bytes, version: int = 1) -> None:
        write_private_file(self._request_key_path(pid, model_id), f"{b64e(key)}\n{version}\n".encode())

    def _request_key_file(self, pid: str, model_id: str) -> tuple[bytes, int]:
        path = self._request_key_path(pid, model_id)
        if not path.exists():
            raise NotFound(f"no request key for model {model_id!r} (run: sesemi user enroll {model_id} --as ...)")
        lines = path.read_text(errors="replace").split()
        version = lines[1] if len(lines) == 2 else "1"  # one line: written before key versions
        try:
            key = b64d(lines[0], "request key") if 1 <= len(lines) <= 2 else b""
        except FormatError:
            key = b""
        if len(key) != 32 or not (version.isascii() and version.isdigit() and 0 < len(version) <= 10) \
                or int(version) < 1:
            raise FormatError(f"{path} is damaged: it holds no 32-byte request key and version (enroll again)")
        return key, int(version)

    def request_key(self, pid: str, model_id: str) -> bytes:
        return self._request_key_file(pid, model_id)[0]

    def request_key_version(self, pid: str, model_id: str) -> int:
        """The version the key service gave the key at enrolment; envelopes name it."""
        return self._request_key_file(pid, model_id)[1]

    def call_counter(self) -> FileCallCounter:
        return FileCallCounter(self.root / "call_seq")

    def save_receipt(self, receipt: Any) -> Path:
        """A write's receipt (sesemi.ks_log.Receipt), kept for offline checks."""
        path = self.root / "receipts" / f"{receipt.index:012d}-{receipt.entry.get('event')}.json"
        write_private_file(path, canonical_json(receipt.to_json()))
        return path

    def state_witness(self) -> FileStateWitness:
        return FileStateWitness(self.root / "ks_state.json")

    # key-service pin
    @property
    def pin_path(self) -> Path:
        return self.root / "ks_pin.json"

    def save_pin(self, pin: KsPin) -> None:
        write_private_file(self.pin_path, canonical_json(pin.to_json()))

    def pin(self) -> KsPin:
        if not self.pin_path.exists():
            raise NotFound("no key service pinned: run `sesemi ks attest URL` first")
        try:
            doc = json_loads(self.pin_path.read_bytes())
            pin = KsPin.from_json(doc) if isinstance(doc, dict) else None
        except (ValueError, TypeError):  # orjson's JSONDecodeError is a ValueError; a missing field a TypeError
            pin = None
        if pin is not None and _is_hex32(pin.hpke_public_key):
            # Pinned before key transport became hybrid: the key service now presents another key.
            raise PinMismatch(f"{self.pin_path} pins an X25519-only key-service key (before post-quantum key "
                              "transport): run `sesemi ks attest URL` again to re-pin its hybrid key")
        if pin is None or not _pin_is_sound(pin):
            raise FormatError(f"{self.pin_path} is damaged: run `sesemi ks attest URL` again to re-pin")
        return pin


def _is_hex32(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v)


def _is_hybrid_key_hex(v: object) -> bool:
    return (isinstance(v, str) and len(v) == 2 * hpke_box.KEMS[hpke_box.HYBRID].public_len
            and all(c in "0123456789abcdefABCDEF" for c in v))


def _pin_is_sound(pin: KsPin) -> bool:
    """The fields later calls use without further checks (keys as hex, the URL)."""
    return (isinstance(pin.url, str) and pin.url.startswith(("http://", "https://"))
            and _is_hybrid_key_hex(pin.hpke_public_key) and (pin.signing_public_key == "" or _is_hex32(pin.signing_public_key))
            and isinstance(pin.tee, str) and isinstance(pin.insecure_simulation, bool))
