"""The enclave's roster call to the key service (/v1/enclave/roster): pages of
a model's roster, or its changes since a state version (sesemi/roster.py).
Through the same connection, pin and state witness as the key releases, so
the answer is signed over a fresh nonce of ours like theirs."""

from __future__ import annotations

from typing import Any

from .encoding import json_dumps
from .ks_transport import EnclaveKeyClient
from .timeouts import Deadline


def fetch_roster(client: EnclaveKeyClient, token: str, model_id: str, since: int | None, after: str,
                 deadline: Deadline | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"model_id": model_id, "after": after}
    if since is not None:
        req["since"] = since
    body, _ = client.http.call("POST", "/v1/enclave/roster", "roster", json_dumps(req),
                               {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                               # The client's pin and witness: this call is one of its calls.
                               signed_by=client._signed_by, deadline=deadline, witness=client._witness)
    return body
