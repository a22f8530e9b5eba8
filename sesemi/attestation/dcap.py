"""The `sgx-dcap` evidence type: an SGX ECDSA (DCAP) quote, verified with
dcap-qvl against collateral (Intel-signed TCB info, QE identity, CRLs and
their issuer chains).

Evidence on the wire: {"type": "sgx-dcap", "quote": base64(raw quote)}.

Collateral comes from a PCCS (fetched per platform family; only collateral
that verified a quote is cached, refreshed daily) or from a file (air-gapped
use).
Its authenticity rests on Intel's signatures, which dcap-qvl checks against
the Intel SGX root CA it embeds; the transport to the PCCS adds nothing to
trust, which is why dcap-qvl does not insist on a valid TLS certificate.

The verification time comes from an injectable clock so that tests can pin
"now" inside a fixed collateral's validity window; in production the clock is
the host's, so it only counts above a persisted floor of Intel-signed dates
(DcapVerifier).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
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
_ATTR_KSS = 0x80               # SGX_FLAGS_KSS: key separation and sharing

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


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# The newest Intel-signed date this code base carries (the issueDate of its
# test fixture's TCB info). It seeds the time floor at first start, so even a
# fresh database refuses collateral that expired before it. The key service
# seeds with the later of this and its build date (sesemi/build_stamp.py: the
# release date in the code and the image's measured stamp), which every
# release moves forward. It is code, so it is part of the measurement.
TIME_FLOOR_SEED = _iso("2025-06-19T10:56:11Z")
FLOOR_MARK = "dcap/time_floor"


def _crl(raw: bytes) -> Any:
    from cryptography import x509

    try:
        return x509.load_der_x509_crl(raw)
    except ValueError:
        try:
            return x509.load_pem_x509_crl(raw)
        except ValueError:
            return None


@dataclass(frozen=True)
class SignedFacts:
    """What collateral says in its Intel-signed parts (the TCB info and QE
    identity JSON under their signatures, the CRLs). Read before verification
    they are claims; they count only once dcap-qvl has verified a quote
    against that collateral."""

    issued: float        # the newest issueDate / CRL thisUpdate: raises the time floor
    next_update: float   # the earliest nextUpdate: past it dcap-qvl refuses the collateral
    fmspc: str
    tcb_eval: int        # tcbEvaluationDataNumber of the TCB info
    qe_id: str
    qe_eval: int         # ... and of the QE identity

    def not_older_than(self, other: "SignedFacts") -> bool:
        return (self.tcb_eval >= other.tcb_eval and self.qe_eval >= other.qe_eval
                and self.issued >= other.issued)


def signed_facts(collateral: Any) -> SignedFacts:
    try:
        tcb, qe = json.loads(collateral.tcb_info), json.loads(collateral.qe_identity)
        issued = [_iso(tcb["issueDate"]), _iso(qe["issueDate"])]
        next_update = [_iso(tcb["nextUpdate"]), _iso(qe["nextUpdate"])]
        counts = (tcb["tcbEvaluationDataNumber"], qe["tcbEvaluationDataNumber"])
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise TypeError("tcbEvaluationDataNumber")
        fmspc, qe_id = tcb["fmspc"], qe["id"]
        if not isinstance(fmspc, str) or not isinstance(qe_id, str):
            raise TypeError("fmspc / id")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError("collateral: TCB info or QE identity lacks issueDate, nextUpdate, "
                          "tcbEvaluationDataNumber, fmspc or id") from exc
    for raw in (collateral.pck_crl, collateral.root_ca_crl):
        crl = _crl(bytes(raw))
        if crl is not None:
            issued.append(crl.last_update_utc.timestamp())
            if crl.next_update_utc is not None:
                next_update.append(crl.next_update_utc.timestamp())
    return SignedFacts(max(issued), min(next_update), fmspc.upper(), counts[0], qe_id, counts[1])


def collateral_next_update(collateral: Any) -> float:
    return signed_facts(collateral).next_update


# --- persisted marks: the time floor and the TCB evaluation numbers ---------

class Marks(Protocol):
    """Monotonic values that must survive restarts (the key service keeps them
    in its store). `raise_mark` stores max(old, value) and returns it."""

    def mark(self, name: str) -> float | None: ...

    def raise_mark(self, name: str, value: float) -> float: ...


class MemoryMarks:
    """Marks for one process (a CLI run, tests): they protect within that run only."""

    def __init__(self) -> None:
        self._marks: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, name: str) -> float | None:
        with self._lock:
            return self._marks.get(name)

    def raise_mark(self, name: str, value: float) -> float:
        with self._lock:
            self._marks[name] = max(self._marks.get(name, value), value)
            return self._marks[name]


# --- collateral sources -----------------------------------------------------

class CollateralSource(Protocol):
    def get(self, quote: bytes, now: float) -> Any:
        """Collateral to verify `quote` with at time `now` (not yet trusted)."""
        ...

    def verified(self, quote: bytes, collateral: Any, facts: SignedFacts, now: float) -> None:
        """`collateral` (from `get`) just verified `quote`: it may be cached."""
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

    def verified(self, quote: bytes, collateral: Any, facts: SignedFacts, now: float) -> None:
        pass  # the file is the cache; the verifier's marks refuse an older file


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


def _fetch_from_pccs(url: str, quote: bytes, timeout: float) -> Any:
    # Imported here: asyncio is ~15 ms of every action's start-up, and only a
    # PCCS fetch (verifiers, not actions) needs it.
    import asyncio

    qvl = _qvl()

    async def fetch() -> Any:
        return await asyncio.wait_for(qvl.get_collateral(url, quote), timeout)

    return asyncio.run(fetch())


@dataclass
class _Entry:
    """One platform family's collateral. `verified` verified a quote (its
    times come from its signed parts); `candidate` was fetched and is what
    quotes are verified with until one succeeds or `candidate_until` passes."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # one fetch at a time per family
    verified: Any = None
    facts: SignedFacts | None = None
    refresh_at: float = 0.0
    candidate: Any = None
    candidate_until: float = 0.0
    retry_after: float = 0.0   # no fetch before this (a failed or pending fetch)

    def usable(self, now: float) -> bool:
        return self.verified is not None and self.facts is not None and now <= self.facts.next_update


class PccsCollateral:
    """Collateral from a PCCS, per platform family (FMSPC, CA, TEE).

    - Only collateral that verified a quote is cached; it is refreshed
      `refresh_s` after it was first verified (daily: Intel reissues TCB info
      within its 30-day validity, e.g. after a TCB recovery) and no later than
      `refresh_margin_s` before its signed nextUpdate.
    - A fetched answer is a candidate: once refresh is due, quotes are checked
      against it, never against the older cached collateral (that would let a
      revoked PCK pass on an old CRL). It becomes the cache when a quote
      verifies. An answer older than the cache (lower tcbEvaluationDataNumber
      or issue date) is discarded: a PCCS cannot swap in older, still-valid
      collateral.
    - Each family has its own fetch lock, taken with a bounded wait; fetches
      run outside the cache lock with a timeout, and a failed fetch is not
      retried for `negative_ttl_s` (meanwhile the cache serves while valid).
    - Families are kept to `max_entries`: a quote names its FMSPC before it
      verifies, so anyone can name new ones; those without verified
      collateral are evicted first.
    """

    def __init__(self, url: str, *, refresh_s: float = 24 * 3600, refresh_margin_s: float = 6 * 3600,
                 retry_s: float = 120, negative_ttl_s: float = 30, fetch_timeout_s: float = 10,
                 lock_timeout_s: float = 15, max_entries: int = 256,
                 fetch: Callable[[str, bytes, float], Any] = _fetch_from_pccs) -> None:
        self.url = normalise_pccs_url(url)
        self.refresh_s = refresh_s
        self.refresh_margin_s = refresh_margin_s
        self.retry_s = retry_s
        self.negative_ttl_s = negative_ttl_s
        self.fetch_timeout_s = fetch_timeout_s
        self.lock_timeout_s = lock_timeout_s
        self.max_entries = max_entries
        self._fetch = fetch
        self._cache: OrderedDict[tuple[str, str, bool], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.fetches = 0

    def _key(self, quote: bytes) -> tuple[str, str, bool]:
        try:
            q = _qvl().parse_quote(quote)
            return q.fmspc(), q.ca(), q.is_sgx()
        except ValueError as exc:
            raise AttestationError("sgx-dcap evidence: the quote cannot be parsed", check="quote") from exc

    def _entry(self, key: tuple[str, str, bool]) -> _Entry:
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                return entry
            if len(self._cache) >= self.max_entries:
                victim = next((k for k, e in self._cache.items() if e.verified is None and not e.lock.locked()),
                              None)
                if victim is None:
                    raise UnavailableError(f"collateral cache full ({self.max_entries} platform families)")
                del self._cache[victim]
            entry = self._cache[key] = _Entry()
            return entry

    def _cached(self, entry: _Entry, now: float) -> Any:
        """What to verify with without fetching, or None if a fetch is due."""
        with self._lock:
            if entry.candidate is not None and now < entry.candidate_until:
                return entry.candidate
            if entry.verified is not None and now < entry.refresh_at:
                return entry.verified
            if now < entry.retry_after:
                return self._fallback(entry, now, "the PCCS failed recently")
        return None

    def _fallback(self, entry: _Entry, now: float, why: str) -> Any:
        if entry.usable(now):
            return entry.verified
        raise UnavailableError(f"cannot get DCAP collateral from the PCCS at {self.url}: {why}")

    def get(self, quote: bytes, now: float) -> Any:
        key = self._key(quote)
        entry = self._entry(key)
        got = self._cached(entry, now)
        if got is not None:
            return got
        if not entry.lock.acquire(timeout=self.lock_timeout_s):
            with self._lock:
                return self._fallback(entry, now, f"another fetch for FMSPC {key[0]} did not finish "
                                                  f"within {self.lock_timeout_s:g} s")
        try:
            got = self._cached(entry, now)  # another thread may have fetched meanwhile
            if got is not None:
                return got
            try:
                self.fetches += 1
                fetched = shared_part(self._fetch(self.url, quote, self.fetch_timeout_s))
                claimed = signed_facts(fetched)  # unverified: used only to refuse a downgrade
            except (ValueError, RuntimeError, OSError, FormatError, TimeoutError) as exc:
                with self._lock:
                    entry.retry_after = now + self.negative_ttl_s
                    why = ("timed out after %g s" % self.fetch_timeout_s
                           if isinstance(exc, TimeoutError) else type(exc).__name__)
                    got = self._fallback(entry, now, why)
                log.warning("PCCS fetch from %s failed (%s); cached collateral valid until %s",
                            self.url, why, _utc(entry.facts.next_update if entry.facts else now))
                return got
            with self._lock:
                entry.retry_after = now + self.retry_s
                if entry.facts is not None and not claimed.not_older_than(entry.facts):
                    log.warning("PCCS at %s answered older collateral for FMSPC %s (TCB eval %d < %d "
                                "or older issue date): discarded", self.url, key[0], claimed.tcb_eval,
                                entry.facts.tcb_eval)
                    return self._fallback(entry, now, "it answered older collateral than already verified")
                entry.candidate, entry.candidate_until = fetched, now + self.retry_s
                return fetched
        finally:
            entry.lock.release()

    def verified(self, quote: bytes, collateral: Any, facts: SignedFacts, now: float) -> None:
        entry = self._entry(self._key(quote))
        with self._lock:
            if collateral is entry.verified:
                return
            if entry.facts is not None and not facts.not_older_than(entry.facts):
                return
            entry.verified, entry.facts = collateral, facts
            entry.refresh_at = min(now + self.refresh_s, facts.next_update - self.refresh_margin_s)
            if collateral is entry.candidate:
                entry.candidate, entry.candidate_until = None, 0.0


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


def _hex(body: dict[str, Any], name: str, nbytes: int) -> bytes:
    value = body[name]
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        raise TypeError(name)
    return bytes.fromhex(value)


def _u16(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise TypeError(name)
    return value


def claims_from_report(doc: Any) -> Claims:
    """dcap-qvl's VerifiedReport JSON -> Claims. Every field the policy uses
    is required with its exact type: a renamed or missing field refuses the
    quote instead of reading as "no advisories"."""
    try:
        body = doc["report"]["SgxEnclave"]
    except (KeyError, TypeError):
        raise AttestationError("sgx-dcap evidence: not an SGX enclave quote", check="quote") from None
    try:
        status, advisories = doc["status"], doc["advisory_ids"]
        if not isinstance(status, str) or not status:
            raise TypeError("status")
        if not isinstance(advisories, list) or not all(isinstance(a, str) and a for a in advisories):
            raise TypeError("advisory_ids")
        attributes = _hex(body, "attributes", 16)
        reserved = b"".join(_hex(body, name, n) for name, n in
                            (("reserved1", 28), ("reserved2", 32), ("reserved3", 96), ("reserved4", 60)))
        claims = Claims(
            tee=TEE,
            mrenclave=_hex(body, "mr_enclave", 32).hex(),
            mrsigner=_hex(body, "mr_signer", 32).hex(),
            isv_prod_id=_u16(body, "isv_prod_id"),
            isv_svn=_u16(body, "isv_svn"),
            debug=bool(attributes[0] & _ATTR_DEBUG),
            report_data=_hex(body, "report_data", 64).hex(),
            tcb_status=status,
            advisory_ids=tuple(advisories),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise AttestationError(f"dcap-qvl returned a report without a valid {exc.args[0] if exc.args else 'field'}",
                               check="report_shape") from None
    # Key separation and sharing (KSS): with it an enclave also carries
    # ISVEXTPRODID, ISVFAMILYID, CONFIGID and CONFIGSVN (sgx_report_body_t in
    # intel/linux-sgx common/inc/sgx_report.h; SGX_FLAGS_KSS in sgx_attributes.h),
    # which dcap-qvl's EnclaveReport (src/quote.rs) reports only as reserved1/3/4
    # bytes, and no policy here checks, so two enclaves this
    # policy cannot tell apart could differ in them. Refused; and without KSS
    # those bytes are architecturally zero.
    if attributes[0] & _ATTR_KSS or any(reserved):
        raise AttestationError("enclaves with KSS enabled (or non-zero KSS / reserved report fields) "
                               "are refused", check="kss")
    return claims


class DcapVerifier:
    """Quote -> Claims. dcap-qvl checks the whole signature chain (Intel root
    -> PCK -> QE report -> attestation key -> enclave report), the CRLs, the
    QE identity and TCB matching, and refuses debug enclaves itself. What it
    leaves to the caller is done here:

    - the time: verification runs at max(clock, floor), where the floor is a
      persisted mark raised only by dates Intel signed in collateral that
      verified (seeded with TIME_FLOOR_SEED). A clock behind the floor is
      refused: a host that sets it back would revive expired collateral;
    - rollback: the highest tcbEvaluationDataNumber seen per FMSPC and per QE
      identity is persisted and lower ones refused, with a configured minimum;
    - judging the TCB status and advisories is the policy's job, not this class's.
    """

    def __init__(self, collateral: CollateralSource, clock: Callable[[], float] = time.time, *,
                 marks: Marks | None = None, min_tcb_eval: int = 0, floor_seed: float = TIME_FLOOR_SEED) -> None:
        self.collateral = collateral
        self.clock = clock
        self.marks: Marks = marks if marks is not None else MemoryMarks()
        self.min_tcb_eval = min_tcb_eval
        self.floor_seed = floor_seed

    def time_floor(self) -> float:
        return self.marks.raise_mark(FLOOR_MARK, self.floor_seed)  # seeds it at first use, never lowers it

    def verify_quote(self, quote: bytes) -> Claims:
        clock = self.clock()
        floor = self.time_floor()
        if clock < floor:
            raise AttestationError(f"the clock ({_utc(clock)}) is behind the time floor ({_utc(floor)}) set by "
                                   f"Intel-signed collateral already verified: refused (a clock set back would "
                                   f"make expired collateral verify)", check="clock_behind_floor")
        at = max(clock, floor)
        collateral = self.collateral.get(quote, at)
        try:
            doc = json.loads(_qvl().verify(quote, collateral, int(at)).to_json())
        except (ValueError, RuntimeError, TypeError) as exc:
            raise _refusal(exc) from None
        claims = claims_from_report(doc)
        facts = signed_facts(collateral)  # verified now: its signed dates and numbers count
        self._check_evaluation(facts)
        self.marks.raise_mark(FLOOR_MARK, min(facts.issued, at))
        self.collateral.verified(quote, collateral, facts, at)
        return claims

    def _check_evaluation(self, facts: SignedFacts) -> None:
        counts = ((f"dcap/tcb_eval/{facts.fmspc}", facts.tcb_eval, f"TCB info for FMSPC {facts.fmspc}"),
                  (f"dcap/qe_eval/{facts.qe_id}", facts.qe_eval, f"QE identity {facts.qe_id}"))
        for name, number, what in counts:
            if number < self.min_tcb_eval:
                raise AttestationError(f"{what} has tcbEvaluationDataNumber {number} < the configured minimum "
                                       f"{self.min_tcb_eval}", check="tcb_eval_min")
            seen = self.marks.mark(name)
            if seen is not None and number < seen:
                raise AttestationError(f"{what} has tcbEvaluationDataNumber {number}, older than {seen:g} "
                                       f"already verified (a collateral downgrade)", check="tcb_eval_rollback")
        for name, number, _ in counts:
            self.marks.raise_mark(name, number)

    def verify(self, evidence: dict[str, Any]) -> Claims:
        return self.verify_quote(quote_from_evidence(evidence))
