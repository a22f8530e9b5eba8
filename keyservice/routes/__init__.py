"""The key service's routes, one blueprint per kind of caller: owners and
users (signed calls), enclaves (attestation and key releases), the log and the
cluster (anyone, and peers), and the service's own (health, metrics, its
attestation)."""
