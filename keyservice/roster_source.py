"""A model's roster as the key service sends it (sesemi/roster.py has the
format): pages of members in user-id order, or the changes since a log
tree size, read from the sealed grant and request-key rows.

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
    if not store.is_granted(model_id, user_id):
        return 0
    rk = store.request_key(model_id, user_id)
    return 0 if rk is None else int(rk["version"])


def page(store: Any, model_id: str, after: str) -> dict[str, Any]:
    """Members whose user id sorts after `after`, at most roster.PAGE of them;
    `next` is the cursor for the page after this one (None: the last)."""
    users = store.grant_listing(model_id, after, roster.PAGE)
    records = []
    for u in users:
        v = _version(store, model_id, u)
        if v:
            records.append((roster.id_hash(model_id, u), v))
    nxt = users[-1] if len(users) == roster.PAGE else None
    return {"records": roster.encode(records), "next": nxt}


def changes(store: Any, model_id: str, since: int) -> dict[str, Any] | None:
    """Every user whose grant or request key changed in the log's leaves from
    `since` (a tree size) on, with their version now (0: off the roster); None
    when more than a page changed (the enclave then fetches the roster whole)."""
    users = store.users_changed(model_id, since, _CHANGES, roster.PAGE + 1)
    if len(users) > roster.PAGE:
        return None
    return {"records": roster.encode((roster.id_hash(model_id, u), _version(store, model_id, u)) for u in users)}


def answer(store: Any, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`since` (a log tree size): the changes from it on; else `after` (a
    user-id cursor, "" for the first page): one page of the whole roster.
    `seq` is the log's size read before the rows, so changes since it cover
    any write that raced with this answer."""
    seq = store.head().size
    since, after = body.get("since"), body.get("after", "")
    out: dict[str, Any] = {"model_id": model_id, "seq": seq}
    if since is not None:
        if type(since) is not int or not 0 <= since:
            raise FormatError("since: expected a log tree size (a non-negative integer)")
        delta = changes(store, model_id, since) if since <= seq else None
        if delta is not None:
            return {**out, "since": since, **delta}
        after = ""  # too far behind (or ahead of this database): start over
    if not isinstance(after, str) or len(after) > 256:
        raise FormatError("after: expected a user-id cursor")
    return {**out, "after": after, **page(store, model_id, after)}
