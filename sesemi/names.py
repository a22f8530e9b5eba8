"""Identifier rules shared by every component, so an id valid in one is valid in all.

Every check uses `fullmatch`: `re.match("^...$")` also accepts a trailing
newline ("digits\\n"), which would then reach paths, logs and database keys.
"""

from __future__ import annotations

import re

from .errors import FormatError

_MODEL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOCAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_model_id(text: object) -> bool:
    return isinstance(text, str) and _MODEL_ID.fullmatch(text) is not None and text not in (".", "..")


def check_model_id(model_id: object) -> str:
    if not is_model_id(model_id):
        raise FormatError("model id must be 1..64 chars of [A-Za-z0-9_.-]")
    assert isinstance(model_id, str)
    return model_id


def check_local_name(name: object, what: str = "name") -> str:
    """Names of local files (identities): 1..64 chars of [A-Za-z0-9_.-], not '.' or '..'."""
    if not isinstance(name, str) or _LOCAL_NAME.fullmatch(name) is None or name in (".", ".."):
        raise FormatError(f"{what}s are 1..64 chars of [A-Za-z0-9_.-]")
    return name
