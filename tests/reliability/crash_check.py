"""The crash-consistency checker: what the key service's database must hold
after any number of kills. It reads through the store's public interface
(`Store.all`, plain SELECTs without parameters), so it runs on any backend
that keeps the same tables; only `integrity` is engine-specific."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Expected:
    """The state every acknowledged operation implies (ops run one at a time,
    each retried until acknowledged, so this is exact)."""

    principals: set[str] = field(default_factory=set)
    models: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # mid -> (owner, key, mrenclave)
    grants: set[tuple[str, str]] = field(default_factory=set)
    request_keys: dict[tuple[str, str], bytes] = field(default_factory=dict)
    acked: int = 0
    # Operations cut by a kill and not retried: each either fully applied or not at all.
    # They touch items no later operation touches, so either outcome is checkable.
    maybe_principals: set[str] = field(default_factory=set)
    maybe_models: set[str] = field(default_factory=set)
    maybe_grants: set[tuple[str, str]] = field(default_factory=set)
    maybe_request_keys: dict[tuple[str, str], bytes] = field(default_factory=dict)
    abandoned: int = 0


def check_tables(store: Any, exp: Expected) -> list[str]:
    """Every acknowledged op present, and every row backed by its audit entry
    in the same transaction (nothing half-applied)."""
    problems: list[str] = []
    principals = {r["id"] for r in store._all("SELECT id FROM principals")}
    models = {r["model_id"]: r for r in store._all("SELECT model_id, owner, policy FROM models")}
    grants = {(r["model_id"], r["user_id"]) for r in store._all("SELECT model_id, user_id FROM grants WHERE active=1")}
    rkeys = {(r["model_id"], r["user_id"]) for r in store._all("SELECT model_id, user_id FROM request_keys")}
    audit = store._all("SELECT seq, event, outcome, principal, model_id, user_id FROM audit ORDER BY seq")
    ok = [a for a in audit if a["outcome"] == "ok"]

    def compare(what: str, have: set, must: set, may: set) -> None:
        if must - have or have - must - may:
            problems.append(f"{what}: acknowledged but missing {sorted(must - have)}, "
                            f"never asked for {sorted(have - must - may)}")

    compare("principals", principals, exp.principals, exp.maybe_principals)
    compare("models", set(models), set(exp.models), exp.maybe_models)
    for mid, (owner, _key, mr) in exp.models.items():
        row = models.get(mid)
        if row is not None and (row["owner"] != owner or mr not in row["policy"]):
            problems.append(f"model {mid}: owner or policy is not the last acknowledged one")
    compare("grants", grants, exp.grants, exp.maybe_grants)
    compare("request keys", rkeys, set(exp.request_keys), set(exp.maybe_request_keys))

    # Rows and their audit entries are written in one transaction: neither without the other.
    audited = {
        "register": {a["principal"] for a in ok if a["event"] == "register"},
        "put_model": {a["model_id"] for a in ok if a["event"] == "put_model"},
        "put_request_key": {(a["model_id"], a["user_id"]) for a in ok if a["event"] == "put_request_key"},
    }
    if principals - audited["register"] or audited["register"] - principals:
        problems.append("principals and their 'register' audit entries disagree")
    if set(models) ^ audited["put_model"]:
        problems.append("models and their 'put_model' audit entries disagree")
    if rkeys ^ audited["put_request_key"]:
        problems.append("request keys and their 'put_request_key' audit entries disagree")
    last: dict[tuple[str, str], str] = {}
    for a in ok:
        if a["event"] in ("grant", "revoke"):
            last[(a["model_id"], a["user_id"])] = a["event"]
    if {k for k, v in last.items() if v == "grant"} != grants:
        problems.append("grants disagree with the last grant/revoke audit entry of each pair")
    seqs = [a["seq"] for a in audit]
    if seqs != sorted(set(seqs)):
        problems.append("audit sequence numbers repeat or go backwards")
    return problems


def integrity(store: Any) -> list[str]:
    """The engine's own check of its files (SQLite: PRAGMA integrity_check)."""
    if store.dialect == "sqlite" and str(getattr(store, "path", "")).endswith(".db"):
        rows = store._all("PRAGMA integrity_check")
        result = [tuple(r)[0] for r in rows]
        return [] if result == ["ok"] else [f"integrity_check: {result[:5]}"]
    return []
