"""What docs/protocol.md says about a tampered pack blob is what the code does:
the streaming reader refuses an edited chunk by its AEAD
tag while decrypting; the manifest digest is checked after the last chunk."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesemi import sealed_model
from sesemi.errors import IntegrityError
from sesemi.pack import Pack, build

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "models" / "digits" / "digits.tflite"


def test_an_edited_blob_is_refused_by_its_chunk_tag_while_streaming(tmp_path):
    key = sealed_model.new_model_key()
    sealed_model.seal_file(DIGITS, tmp_path / "d.sealed", key, "digits")
    build(tmp_path / "p.pack", [tmp_path / "d.sealed"])
    raw = bytearray((tmp_path / "p.pack").read_bytes())
    raw[-20] ^= 1  # a byte of the last chunk's ciphertext
    (tmp_path / "p.pack").write_bytes(bytes(raw))
    pack = Pack(tmp_path / "p.pack")  # opening does not read the blobs
    reader = pack.reader("digits")
    with pytest.raises(IntegrityError, match="does not authenticate"):
        sealed_model.open_stream(reader.read, reader.length, key, "digits")
    with pytest.raises(IntegrityError, match="does not match the pack manifest"):
        reader.verify()
    pack.close()
    doc = (REPO / "docs" / "protocol.md").read_text()
    assert "before decryption" not in doc and "AES-GCM tag of the edited chunk" in doc
