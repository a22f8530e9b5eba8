"""One exception type per failure kind, so callers (HTTP layers, the CLI) map
each to a precise status and message without string matching.

Messages never contain key material, plaintext model bytes, inputs or outputs.
"""


class SesemiError(Exception):
    """Base of every error this project raises on purpose."""

    http_status = 400


class FormatError(SesemiError):
    """Malformed input: wrong magic, version, field, length or encoding."""

    http_status = 400


class IntegrityError(SesemiError):
    """An AEAD tag, signature or digest did not verify (tampering or wrong key)."""

    http_status = 400


class AuthError(SesemiError):
    """A signed call failed authentication (bad signature, unknown principal)."""

    http_status = 401


class ReplayError(SesemiError):
    """A nonce, timestamp or request id was seen before or is out of window."""

    http_status = 409


class StaleSequence(ReplayError):
    """The call's sequence number does not exceed the last one accepted for its
    principal: a replay, or a client whose counter fell behind (lost or copied
    $SESEMI_HOME). The answer names the last number, so an honest client skips
    past it; the answer is signed, so a proxy cannot push the counter."""

    def __init__(self, message: str = "", last_seq: int = 0) -> None:
        super().__init__(message)
        self.last_seq = last_seq


class AttestationError(SesemiError):
    """Evidence could not be verified (bad signature, sim not allowed, stale).
    `check` names what failed (e.g. 'quote', 'collateral_validity', 'report_data')."""

    http_status = 403

    def __init__(self, message: str = "", check: str = "attestation") -> None:
        self.check = check
        super().__init__(message)


class PolicyError(SesemiError):
    """Verified claims do not satisfy a policy. `check` names the failed check."""

    http_status = 403

    def __init__(self, check: str, detail: str = "") -> None:
        self.check = check
        super().__init__(f"policy check '{check}' failed" + (f": {detail}" if detail else ""))


class AccessDenied(SesemiError):
    """A principal asked for something it is not entitled to (not owner, not granted)."""

    http_status = 403


class NotFound(SesemiError):
    http_status = 404


class Conflict(SesemiError):
    http_status = 409


class PinMismatch(SesemiError):
    """The key service's key differs from the one this client pinned."""

    http_status = 400


class UnavailableError(SesemiError):
    """A dependency (key service, device) could not be reached or is not present."""

    http_status = 503


class RateLimited(UnavailableError):
    """A caller asked for more than its share (429): retryable, as anything
    unavailable is, once its bucket refills (docs/keyservice.md, "Bounds")."""

    http_status = 429


class TimeoutExpired(UnavailableError):
    """A bounded wait ran out (retryable). `bound` names which one: 'connect',
    'read' or 'budget' (the total over several calls)."""

    def __init__(self, message: str = "", bound: str = "read") -> None:
        self.bound = bound
        super().__init__(message)


class ModelUnavailable(SesemiError):
    """A model in the action's pack cannot be loaded (tampered or corrupt pack,
    sealed under another key, not a TFLite file). Another action may serve it."""

    http_status = 503


class RollbackDetected(SesemiError):
    """The key service's state is older than a state already seen (by this
    replica, a peer replica, or this client): its database was rolled back.
    A replica that finds it refuses to serve; a client refuses the answer."""

    http_status = 503


class StoreUnavailable(UnavailableError):
    """The database server could not be reached (retryable: another replica may)."""
