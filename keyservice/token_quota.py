"""Which attestation tokens to drop when there are too many (docs/keyservice.md,
"Token quotas"). Anyone who can attest, with sim evidence where it is accepted
or with an SGX machine of their own (policy is judged at release, not at
attestation), can mint tokens; before this, minting evicted the oldest tokens
first, so a flood logged out every honest enclave.

Tokens are grouped by the measurement that earned them (tee, MRENCLAVE,
MRSIGNER): the claims carry no platform identity to group by. Rules:
- a group holds at most `per_group` tokens: a flood from one measurement
  evicts its own tokens, never another group's;
- over the global cap, the largest group gives one up;
- within a group, a token never used (no key or roster released with it) goes
  before one in use, and among each kind the least recently used first; an
  honest enclave uses its token moments after minting it, a flooder's tokens
  are never used unless its enclave meets a model's policy.

Held in memory, at most the global cap of entries; rebuilt from the tokens
table at start (those count as in use). The store's own cap (trim_expiring)
stays as the backstop, e.g. for tokens another replica minted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Entry:
    group: str
    expires: float
    used: bool = False


class TokenBook:
    def __init__(self, per_group: int, cap: int) -> None:
        self.per_group, self.cap = per_group, cap
        self._tokens: dict[str, _Entry] = {}
        # per group: never-used tokens by mint order, used ones by last use
        self._idle: dict[str, OrderedDict[str, None]] = {}
        self._used: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def group_of(tee: str, mrenclave: str, mrsigner: str) -> str:
        return f"{tee}:{mrenclave}:{mrsigner}"

    def __len__(self) -> int:
        return len(self._tokens)

    def mint(self, token_hash: str, group: str, expires: float, used: bool = False) -> list[str]:
        """Record a new token; returns the token hashes to drop for it."""
        with self._lock:
            self._tokens[token_hash] = _Entry(group, expires, used)
            (self._used if used else self._idle).setdefault(group, OrderedDict())[token_hash] = None
            out = []
            while self._size(group) > self.per_group:
                out.append(self._evict(group))
            while len(self._tokens) > self.cap:
                out.append(self._evict(max(self._groups(), key=self._size)))
            return out

    def touch(self, token_hash: str) -> None:
        """A key or roster was released with this token: it is in use."""
        with self._lock:
            e = self._tokens.get(token_hash)
            if e is None:
                return
            self._idle.get(e.group, OrderedDict()).pop(token_hash, None)
            used = self._used.setdefault(e.group, OrderedDict())
            used.pop(token_hash, None)
            used[token_hash] = None
            e.used = True

    def purge(self, now: float) -> None:
        with self._lock:
            for h in [h for h, e in self._tokens.items() if e.expires < now]:
                self._drop(h)

    def _groups(self) -> set[str]:
        return set(self._idle) | set(self._used)

    def _size(self, group: str) -> int:
        return len(self._idle.get(group, ())) + len(self._used.get(group, ()))

    def _evict(self, group: str) -> str:
        pool = self._idle.get(group) or self._used[group]
        h = next(iter(pool))
        self._drop(h)
        return h

    def _drop(self, token_hash: str) -> None:
        e = self._tokens.pop(token_hash)
        for table in (self._idle, self._used):
            od = table.get(e.group)
            if od is not None:
                od.pop(token_hash, None)
                if not od:
                    del table[e.group]
