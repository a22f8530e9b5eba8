"""Attestation: evidence types, their verification, and the REPORT_DATA binding.

Backends differ only in how evidence is produced and how its signature chain
is checked; both yield the same `Claims`, which one policy code path judges.
"""

from .claims import Claims, report_data_binding
from .verify import EvidenceVerifier, check_binding, verify_evidence

__all__ = ["Claims", "EvidenceVerifier", "check_binding", "report_data_binding", "verify_evidence"]
