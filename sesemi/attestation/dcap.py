"""The `sgx-dcap` evidence type: an SGX ECDSA (DCAP) quote, verified with
dcap-qvl against collateral (Intel-signed TCB info, QE identity, CRLs and
their issuer chains).

Evidence on the wire: {"type": "sgx-dcap", "quote": base64(raw quote)}.

Collateral comes from a PCCS (fetched per platform family, cached and
refreshed before its earliest nextUpdate) or from a file (air-gapped use).
Its authenticity rests on Intel's signatures, which dcap-qvl checks against
the Intel SGX root CA it embeds; the transport to the PCCS adds nothing to
trust, which is why dcap-qvl does not insist on a valid TLS certificate.

The verification time comes from an injectable clock so that tests (and
nobody else) can pin "now" inside a fixed collateral's validity window.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from ..encoding import b64d, b64e
from ..errors import AttestationError, FormatError, UnavailableError
from .claims import Claims

log = logging.getLogger("sesemi.attestation")

TYPE = "sgx-dcap"
TEE = "sgx"                    # Claims.tee for hardware-verified SGX evidence
HEADER_LEN = 48                # sgx_quote_header_t
REPORT_BODY = slice(48, 432)   # sgx_report_body_t, 384 bytes, signed by the QE's attestation key
MAX_QUOTE_BYTES = 64 << 10     # real quotes are ~5 KB; refuse junk before parsing it
_ATTR_DEBUG = 0x02             # SGX_FLAGS_DEBUG in the low byte of ATTRIBUTES.flags

QCNL_CONF = Path("/etc/sgx_default_qcnl.conf")


def _qvl():
    # Imported on first use: the CLI and sim-only processes need not load it.
    import dcap_qvl

    return dcap_qvl


def evidence_for_quote(quote: bytes) -> dict[str, Any]:
    return {"type": TYPE, "quote": b64e(quote)}


def quote_from_evidence(evidence: dict[str, Any]) -> bytes:
    quote = b64d(evidence.get("quote"), "evidence.quote")
    if not HEADER_LEN < len(quote) <= MAX_QUOTE_BYTES:
        raise AttestationError("sgx-dcap evidence: quote has an impossible length", check="quote")
    return quote


# --- collateral -------------------------------------------------------------

def parse_collateral(text: str | bytes) -> Any:
    """dcap-qvl's collateral JSON (QuoteCollateralV3.to_json) -> collateral."""
    try:
        return _qvl().QuoteCollateralV3.from_json(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError("collateral: not dcap-qvl collateral JSON") from exc


def shared_part(collateral: Any) -> Any:
    """The collateral without a PCK certificate chain. dcap-qvl's get_collateral
    attaches the chain of the quote it fetched for, and dcap-qvl prefers that
    chain to the one embedded in a quote: kept in a cache, it would make every
    other platform's quotes fail. Quotes from Occlum embed their own chain
    (certification data type 5), so the shared part is all a cache needs."""
    doc = json.loads(collateral.to_json())
    if doc.pop("pck_certificate_chain", None) is None:
        return collateral
    return parse_collateral(json.dumps(doc))


def _iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _crl_next_update(raw: bytes) -> float | None:
    from cryptography import x509

    try:
        crl = x509.load_der_x509_crl(raw)
    except ValueError:
        try:
            crl = x509.load_pem_x509_crl(raw)
        except ValueError:
            return None
    nu = crl.next_update_utc
    return None if nu is None else nu.timestamp()


def collateral_next_update(collateral: Any) -> float:
    """The earliest nextUpdate among the collateral's parts: past it, dcap-qvl
    refuses the collateral, so a cache must have replaced it by then."""
    times: list[float] = []
    try:
        for doc in (collateral.tcb_info, collateral.qe_identity):
            times.append(_iso(json.loads(doc)["nextUpdate"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError("collateral: TCB info or QE identity lacks a valid nextUpdate") from exc
    for raw in (collateral.pck_crl, collateral.root_ca_crl):
        t = _crl_next_update(bytes(raw))
        if t is not None:
            times.append(t)
    return min(times)


class CollateralSource(Protocol):
    def get(self, quote: bytes, now: float) -> Any:
        """Collateral that should verify `quote` at time `now`."""
        ...


class FileCollateral:
    """Collateral from a file, for air-gapped verifiers. The operator replaces
    the file before its nextUpdate; it is re-read when its mtime changes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._collateral: Any = None
        self._load()  # a bad file should stop the service at start, not at the first quote

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self._collateral = shared_part(parse_collateral(self.path.read_bytes()))
                self._mtime = mtime
        except OSError as exc:
            raise UnavailableError(f"collateral file {self.path}: {exc.strerror or exc}") from None

    def get(self, quote: bytes, now: float) -> Any:
        with self._lock:
            self._load()
            return self._collateral


def normalise_pccs_url(url: str) -> str:
    """PCCS URLs come as a base (https://host:8081) or with the API path
    (https://host:8081/sgx/certification/v4/, as in sgx_default_qcnl.conf).
    dcap-qvl appends `/sgx/certification/v4/...` itself and strips only a
    trailing v4 path, so strip any version here (v3 configs are common)."""
    url = url.strip().rstrip("/")
    url = re.sub(r"/(sgx|tdx)/certification/v\d+$", "", url)
    if not re.match(r"^https?://[^/\s]+", url):
        raise FormatError("PCCS URL: expected http(s)://host[:port][/sgx/certification/vN]")
    return url


def pccs_url_from_qcnl(path: str | os.PathLike | None = None) -> str | None:
    """The collateral URL that Intel's quote provider library is configured
    with: `collateral_service` if set, else `pccs_url` (JSON form, DCAP >= 1.13,
    with // comments), or COLLATERAL_SERVICE / PCCS_URL (older key=value form)."""
    try:
        text = Path(path or QCNL_CONF).read_text()
    except OSError:
        return None
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("//", "#")))
    try:
        conf = json.loads(stripped)
        if isinstance(conf, dict):
            url = conf.get("collateral_service") or conf.get("pccs_url")
            return str(url) if url else None
    except ValueError:
        pass
    kv = dict(m.groups() for m in re.finditer(r"^\s*([A-Z_]+)\s*=\s*(\S+)\s*$", stripped, re.M))
    return kv.get("COLLATERAL_SERVICE") or kv.get("PCCS_URL") or kv.get("PCS_URL")


def _fetch_from_pccs(url: str, quote: bytes) -> Any:
    # Imported here: asyncio is ~15 ms of every action's start-up, and only a
    # PCCS fetch (verifiers, not actions) needs it.
    import asyncio

    qvl = _qvl()
    return asyncio.run(qvl.get_collateral(url, quote))


@dataclass
class _Cached:
    collateral: Any
    next_update: float
    last_attempt: float


class PccsCollateral:
    """Collateral from a PCCS, cached per (FMSPC, CA, TEE) and refreshed once
    `now` is within `refresh_margin_s` of its earliest nextUpdate. If a refresh
    fails, the cached collateral serves until it actually expires; a refresh is
    retried at most every `retry_s` so a slow PCCS is not hammered."""

    def __init__(self, url: str, *, refresh_margin_s: float = 6 * 3600, retry_s: float = 300,
                 fetch: Callable[[str, bytes], Any] = _fetch_from_pccs) -> None:
        self.url = normalise_pccs_url(url)
        self.refresh_margin_s = refresh_margin_s
        self.retry_s = retry_s
        self._fetch = fetch
        self._cache: dict[tuple[str, str, bool], _Cached] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _key(self, quote: bytes) -> tuple[str, str, bool]:
        try:
            q = _qvl().parse_quote(quote)
            return q.fmspc(), q.ca(), q.is_sgx()
        except ValueError as exc:
            raise AttestationError("sgx-dcap evidence: the quote cannot be parsed", check="quote") from exc

    def get(self, quote: bytes, now: float) -> Any:
        key = self._key(quote)
        with self._lock:
            entry = self._cache.get(key)
            fresh = entry is not None and now < entry.next_update - self.refresh_margin_s
            if fresh:
                return entry.collateral
            if entry is not None and now < entry.next_update and now - entry.last_attempt < self.retry_s:
                return entry.collateral
            try:
                self.fetches += 1
                collateral = shared_part(self._fetch(self.url, quote))
                nu = collateral_next_update(collateral)
            except (ValueError, RuntimeError, OSError, FormatError) as exc:
                if entry is not None and now < entry.next_update:
                    entry.last_attempt = now
                    log.warning("PCCS refresh from %s failed (%s); cached collateral valid until %s",
                                self.url, type(exc).__name__, time.strftime("%FT%TZ", time.gmtime(entry.next_update)))
                    return entry.collateral
                raise UnavailableError(f"cannot get DCAP collateral from the PCCS at {self.url} "
                                       f"({type(exc).__name__})") from None
            self._cache[key] = _Cached(collateral, nu, now)
            return collateral


def collateral_source(*, pccs_url: str | None = None, collateral_file: str | os.PathLike | None = None
                      ) -> CollateralSource | None:
    """The source a verifier was configured with (file wins: it is explicit)."""
    if collateral_file:
        return FileCollateral(collateral_file)
    if pccs_url:
        return PccsCollateral(pccs_url)
    return None


# --- verification -----------------------------------------------------------

_TIME_FAILURES = ("expired", "in the future", "not yet valid")


def _refusal(exc: Exception) -> AttestationError:
    detail = str(exc).splitlines()[0].removeprefix("Verification failed: ").strip()[:160]
    low = str(exc).lower()
    if any(s in low for s in _TIME_FAILURES):
        return AttestationError(f"DCAP collateral is not valid at this time: {detail}", check="collateral_validity")
    return AttestationError(f"DCAP quote does not verify: {detail}", check="quote")


class DcapVerifier:
    """Quote -> Claims. Checks the whole signature chain (Intel root -> PCK ->
    QE report -> attestation key -> enclave report) and yields the TCB status
    and advisories; judging those is the policy's job, not this class's."""

    def __init__(self, collateral: CollateralSource, clock: Callable[[], float] = time.time) -> None:
        self.collateral = collateral
        self.clock = clock

    def verify_quote(self, quote: bytes) -> Claims:
        now = self.clock()
        collateral = self.collateral.get(quote, now)
        try:
            report = _qvl().verify(quote, collateral, int(now))
            doc = json.loads(report.to_json())
        except (ValueError, RuntimeError, TypeError) as exc:
            raise _refusal(exc) from None
        body = (doc.get("report") or {}).get("SgxEnclave")
        if not isinstance(body, dict):
            raise AttestationError("sgx-dcap evidence: not an SGX enclave quote", check="quote")
        try:
            attributes = bytes.fromhex(body["attributes"])
            return Claims(
                tee=TEE,
                mrenclave=body["mr_enclave"].lower(),
                mrsigner=body["mr_signer"].lower(),
                isv_prod_id=int(body["isv_prod_id"]),
                isv_svn=int(body["isv_svn"]),
                debug=bool(attributes[0] & _ATTR_DEBUG),
                report_data=body["report_data"].lower(),
                tcb_status=str(doc["status"]),
                advisory_ids=tuple(str(a) for a in doc.get("advisory_ids") or ()),
            )
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise AttestationError("dcap-qvl returned a report of an unexpected shape", check="quote") from exc

    def verify(self, evidence: dict[str, Any]) -> Claims:
        return self.verify_quote(quote_from_evidence(evidence))
