"""The date a release was built, which the DCAP time floor never goes below
(docs/attestation.md, "Time"). A host that controls the clock can set it back,
but never to before the running software was built: collateral that expired
before then is refused whatever the clock says.

Two sources, the later wins:
- RELEASE_DATE, in this (measured) code: every release moves it forward, and
  the static check `occlum_instance/checks/release_date.py` fails when it, or
  the seed in the key-service templates, lags the newest commit by more than
  MAX_LAG_DAYS;
- SESEMI_BUILD_DATE, which the image build stamps into the key service's
  measured configuration (Occlum.json env.default, occlum_instance/render.py;
  in sim, KeyServiceConfig.trusted(), which the simulated measurement covers).
"""

from __future__ import annotations

import time
from calendar import timegm
from typing import Mapping

from .errors import FormatError

RELEASE_DATE = "2026-12-07T00:00:00Z"
MAX_LAG_DAYS = 90
ENV = "SESEMI_BUILD_DATE"
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse(text: str) -> float:
    """A UTC time in exactly the form 2026-12-07T00:00:00Z, as epoch seconds."""
    try:
        return float(timegm(time.strptime(text, _FORMAT)))
    except (TypeError, ValueError):
        raise FormatError(f"build date {str(text)[:40]!r}: expected a UTC time like {RELEASE_DATE}") from None


def stamp(epoch: float) -> str:
    return time.strftime(_FORMAT, time.gmtime(epoch))


def release_date() -> float:
    return parse(RELEASE_DATE)


def build_date(environ: Mapping[str, str]) -> float:
    """The later of the code's release date and the stamped build date."""
    stamped = environ.get(ENV)
    return max(release_date(), parse(stamped)) if stamped else release_date()
