"""Enclave policies: which attested enclaves may receive a key.

One code path judges claims from every evidence type. Each refusal names the
check that failed (never a secret), and that name lands in the API error and
in the audit log.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass, field
from typing import Any

from .attestation.claims import Claims
from .errors import FormatError, PolicyError

DEFAULT_TCB_STATUSES = ("UpToDate",)


def _hex32_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise FormatError(f"policy.{what}: expected a list of hex strings")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise FormatError(f"policy.{what}: expected hex strings")
        v = v.lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise FormatError(f"policy.{what}: each value must be 32 bytes of hex (64 chars)")
        out.append(v)
    return tuple(out)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise FormatError(f"policy.{what}: expected an integer in [0, 65535]")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"policy.{what}: expected true or false")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise FormatError(f"policy.{what}: expected a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class EnclavePolicy:
    mrenclave: tuple[str, ...] = ()
    mrsigner: tuple[str, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    allow_debug: bool = False
    tcb_statuses: tuple[str, ...] = DEFAULT_TCB_STATUSES
    # Intel advisories a platform may carry: an allowlist, so an advisory Intel
    # publishes later refuses until the owner has judged it. The denylist only
    # narrows it (and the default status, UpToDate, may carry advisories too).
    advisory_allowlist: tuple[str, ...] = field(default_factory=tuple)
    advisory_denylist: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # An empty allowlist would release the key to ANY enclave.
        if not self.mrenclave and not self.mrsigner:
            raise FormatError("policy must allow at least one mrenclave or mrsigner")

    @classmethod
    def from_json(cls, d: Any) -> "EnclavePolicy":
        if not isinstance(d, dict):
            raise FormatError("policy: expected a JSON object")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise FormatError(f"policy: unknown field(s) {sorted(unknown)}")
        # Strict types: a lenient parse fails open ("false" is truthy, a string
        # denylist would be iterated as characters).
        prod = d.get("isv_prod_id")
        return cls(
            mrenclave=_hex32_list(d.get("mrenclave"), "mrenclave"),
            mrsigner=_hex32_list(d.get("mrsigner"), "mrsigner"),
            isv_prod_id=None if prod is None else _int(prod, "isv_prod_id"),
            min_isv_svn=_int(d.get("min_isv_svn", 0), "min_isv_svn"),
            allow_debug=_bool(d.get("allow_debug", False), "allow_debug"),
            tcb_statuses=_str_list(d.get("tcb_statuses", list(DEFAULT_TCB_STATUSES)), "tcb_statuses"),
            advisory_allowlist=_str_list(d.get("advisory_allowlist", []), "advisory_allowlist"),
            advisory_denylist=_str_list(d.get("advisory_denylist", []), "advisory_denylist"),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mrenclave", "mrsigner", "tcb_statuses", "advisory_allowlist", "advisory_denylist"):
            d[k] = list(d[k])
        return d

    def check(self, claims: Claims) -> None:
        """Raise PolicyError naming the first failed check; return if all pass.

        When both mrenclave and mrsigner lists are set, BOTH must match: the
        owner asked for this code AND this signer.
        """
        if self.mrenclave and not any(hmac.compare_digest(claims.mrenclave, m) for m in self.mrenclave):
            raise PolicyError("mrenclave", "the enclave's measurement is not in the model's allowlist")
        if self.mrsigner and not any(hmac.compare_digest(claims.mrsigner, m) for m in self.mrsigner):
            raise PolicyError("mrsigner", "the enclave's signer is not in the model's allowlist")
        if self.isv_prod_id is not None and claims.isv_prod_id != self.isv_prod_id:
            raise PolicyError("isv_prod_id", f"expected {self.isv_prod_id}, got {claims.isv_prod_id}")
        if claims.isv_svn < self.min_isv_svn:
            raise PolicyError("min_isv_svn", f"isv_svn {claims.isv_svn} < {self.min_isv_svn}")
        if claims.debug and not self.allow_debug:
            raise PolicyError("debug", "debug enclaves are refused (their memory is readable by the host)")
        if not claims.simulated:
            if claims.tcb_status not in self.tcb_statuses:
                raise PolicyError("tcb_status", f"status {claims.tcb_status!r} is not accepted")
            denied = sorted(set(claims.advisory_ids) & set(self.advisory_denylist))
            if denied:
                raise PolicyError("advisory_denylist", f"advisories {denied} are denied")
            unlisted = sorted(set(claims.advisory_ids) - set(self.advisory_allowlist))
            if unlisted:
                raise PolicyError("advisory_allowlist", f"advisories {unlisted} are not in the allowlist")
