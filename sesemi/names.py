"""Identifier rules shared by every component, so an id valid in one is valid in all."""

from __future__ import annotations

import re

from .errors import FormatError

_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_model_id(model_id: object) -> str:
    if not isinstance(model_id, str) or not _MODEL_ID.match(model_id) or model_id in (".", ".."):
        raise FormatError("model id must be 1..64 chars of [A-Za-z0-9_.-]")
    return model_id
