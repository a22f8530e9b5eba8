"""The real SGX DCAP quote and its collateral, a frozen copy from the
MIT-licensed dcap-qvl project (tests/fixtures/dcap, licence beside it).
A missing fixture is a failure, not a skip."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

DIR = Path(__file__).resolve().parents[1] / "fixtures" / "dcap"
QUOTE_PATH = DIR / "sgx_quote.bin"
COLLATERAL_PATH = DIR / "sgx_quote_collateral.json"

MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
STATUS = "ConfigurationAndSWHardeningNeeded"
ADVISORIES = ("INTEL-SA-00289", "INTEL-SA-00615")


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


WINDOW_START = ts("2025-06-19T10:56:11Z")
WINDOW_END = ts("2025-07-19T10:01:18Z")
INSIDE = ts("2025-07-01T12:00:00Z")


def _read(path: Path) -> bytes:
    if not path.is_file():
        pytest.fail(f"DCAP fixture missing: {path.resolve()} (the repository "
                    f"keeps a frozen copy under tests/fixtures/dcap)", pytrace=False)
    return path.read_bytes()


def quote() -> bytes:
    return _read(QUOTE_PATH)


def collateral_json() -> bytes:
    return _read(COLLATERAL_PATH)


def clock(t: float):
    return lambda: t
