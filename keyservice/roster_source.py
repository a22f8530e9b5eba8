"""A model's roster as the key service sends it (sesemi/roster.py has the
format): pages of members in user-id order, or the changes since a state
version, read from the sealed grant and request-key rows.

The host may hide rows from the listing queries (the reads after them are
sealed, so it cannot add or alter a member): that can only drop members from
a roster, which denies service, as the host always can; it never admits a
user, because every request key is still released only after the key service
checks the grant itself (service.py release_keys).
"""

from __future__ import annotations

from typing import Any

from sesemi import roster
from sesemi.errors import FormatError

_CHANGES = ("grant", "revoke", "put_request_key")


def _version(store: Any, model_id: str, user_id: str) -> int:
    """The user's request-key version if granted and enrolled, else 0."""
    grant = store.get("grants", (model_id, user_id))
    if grant is None or not grant["active"]:
        return 0
    rk = store.request_key(model_id, user_id)
    return 0 if rk is None else int(rk["version"])


def page(store: Any, model_id: str, after: str) -> dict[str, Any]:
    """Members whose user id sorts after `after`, at most roster.PAGE of them;
    `next` is the cursor for the page after this one (None: the last)."""
    rows = store.all("SELECT user_id FROM grants WHERE model_id=? AND user_id > ? ORDER BY user_id LIMIT ?",
                     model_id, after, roster.PAGE)
    records = []
    for r in rows:
        v = _version(store, model_id, r["user_id"])
        if v:
            records.append((roster.id_hash(model_id, r["user_id"]), v))
    nxt = rows[-1]["user_id"] if len(rows) == roster.PAGE else None
    return {"records": roster.encode(records), "next": nxt}


def changes(store: Any, model_id: str, since: int) -> dict[str, Any] | None:
    """Every user whose grant or request key changed after state version
    `since`, with their version now (0: off the roster); None when more than
    a page changed (the enclave then fetches the roster whole)."""
    marks = ", ".join("?" * len(_CHANGES))
    rows = store.all(f"SELECT DISTINCT user_id FROM audit WHERE model_id=? AND seq > ? AND user_id IS NOT NULL "
                     f"AND event IN ({marks}) LIMIT ?", model_id, since, *_CHANGES, roster.PAGE + 1)
    if len(rows) > roster.PAGE:
        return None
    return {"records": roster.encode((roster.id_hash(model_id, r["user_id"]), _version(store, model_id, r["user_id"]))
                                     for r in rows)}


def answer(store: Any, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`since` (a state version): the changes after it; else `after` (a user-id
    cursor, "" for the first page): one page of the whole roster. `seq` is the
    state version read before the rows, so changes since it cover any write
    that raced with this answer."""
    seq = store.state().seq
    since, after = body.get("since"), body.get("after", "")
    out: dict[str, Any] = {"model_id": model_id, "seq": seq}
    if since is not None:
        if type(since) is not int or not 0 <= since:
            raise FormatError("since: expected a state version (a non-negative integer)")
        delta = changes(store, model_id, since) if since <= seq else None
        if delta is not None:
            return {**out, "since": since, **delta}
        after = ""  # too far behind (or ahead of this database): start over
    if not isinstance(after, str) or len(after) > 256:
        raise FormatError("after: expected a user-id cursor")
    return {**out, "after": after, **page(store, model_id, after)}
