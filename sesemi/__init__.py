"""SeSeMI shared core: wire formats, crypto envelopes, attestation, client SDK."""

__version__ = "0.1.0"

# isv_svn that this release reports; bump on every security-relevant fix so
# owners can raise `min_isv_svn` and shut out older enclaves.
ISV_SVN = 1
ISV_PROD_ID = 1
