"""Which TEE backend produces this process's evidence, by name.

The action and the key service both pick their backend here, so `--tee`
means the same thing everywhere and an unavailable backend fails at start
with one clear message instead of at the first attestation.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..errors import FormatError
from . import occlum
from .sim import SimBackend

TEE_NAMES = ("sim", "occlum")


class TeeBackend(Protocol):
    name: str
    simulated: bool

    @property
    def mrenclave(self) -> str: ...

    def evidence(self, report_data: bytes) -> dict[str, Any]: ...


def check_tee_name(tee: str) -> str:
    if tee not in TEE_NAMES:
        raise FormatError(f"unknown TEE backend {tee!r} (choose from {', '.join(TEE_NAMES)})")
    return tee


def check_available(tee: str, *, device: str = occlum.DEVICE) -> None:
    """Raise unless `tee` can produce evidence in this process."""
    if check_tee_name(tee) == "occlum":
        occlum.require_device(device)


def make_backend(tee: str, *, sim_mrenclave: Callable[[], str], isv_prod_id: int, isv_svn: int,
                 sim_debug: bool = False, device: str = occlum.DEVICE) -> TeeBackend:
    """The backend for `tee`. `sim_mrenclave` computes the simulated measurement;
    it is only called for sim (in Occlum the CPU measures, and hashing the code
    again would be both wasted and meaningless)."""
    check_tee_name(tee)
    if tee == "sim":
        return SimBackend(sim_mrenclave(), isv_prod_id=isv_prod_id, isv_svn=isv_svn, debug=sim_debug)
    return occlum.OcclumBackend(device=device)
