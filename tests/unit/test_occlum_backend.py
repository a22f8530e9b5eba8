"""The `occlum` backend: ioctl numbers and argument packing against a fake
/dev/sgx that behaves like Occlum's LibOS device, the backend factory, and
refusing to start without the device."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from keyservice import KeyService, KeyServiceConfig
from sesemi import ks_response
from sesemi.attestation import dcap, report_data_binding
from sesemi.attestation.backends import check_available, make_backend
from sesemi.attestation.occlum import (SGXIOC_GEN_DCAP_QUOTE, SGXIOC_GET_DCAP_QUOTE_SIZE, OcclumBackend,
                                       OcclumQuoter, require_device)
from sesemi.attestation.sim import SimBackend
from sesemi.encoding import b64d
from sesemi.errors import FormatError, UnavailableError

from . import dcap_fixture as fx

FD = 7
REPORT_DATA_AT = dcap.REPORT_BODY.start + 320  # sgx_report_body_t.report_data


class FakeSgxDevice:
    """Answers the two DCAP ioctls as Occlum's dev_sgx does: the size as a u32;
    then, through the pointers in IoctlGenDCAPQuoteArg, reads 64 bytes of
    report data and the buffer size and writes the quote (the fixture's, with
    the report data placed where a real quote carries it)."""

    def __init__(self, template: bytes, fail: int | None = None) -> None:
        self.template = template
        self.fail = fail
        self.requests: list[int] = []
        self.opened: list[tuple[str, int]] = []
        self.closed: list[int] = []

    def open(self, path: str, flags: int) -> int:
        self.opened.append((path, flags))
        return FD

    def close(self, fd: int) -> None:
        self.closed.append(fd)

    def ioctl(self, fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        assert fd == FD and mutate is True and isinstance(arg, bytearray)
        self.requests.append(request)
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        if request == SGXIOC_GET_DCAP_QUOTE_SIZE:
            assert len(arg) == 4
            arg[:] = struct.pack("<I", len(self.template))
            return 0
        if request == SGXIOC_GEN_DCAP_QUOTE:
            assert len(arg) == 24
            rd_ptr, size_ptr, buf_ptr = struct.unpack("<QQQ", arg)
            report_data = ctypes.string_at(rd_ptr, 64)
            if ctypes.c_uint32.from_address(size_ptr).value < len(self.template):
                raise OSError(errno.EINVAL, "provided quote is too small")
            quote = self.template[:REPORT_DATA_AT] + report_data + self.template[REPORT_DATA_AT + 64:]
            ctypes.memmove(buf_ptr, quote, len(quote))
            return 0
        raise OSError(errno.ENOSYS, "unknown ioctl cmd for /dev/sgx")

    def quoter(self) -> OcclumQuoter:
        return OcclumQuoter("/dev/sgx", ioctl=self.ioctl, opener=self.open, closer=self.close)


def test_ioctl_numbers_match_occlum_dcap_lib():
    # tools/toolchains/dcap_lib/src/occlum_dcap.rs in occlum/occlum
    assert SGXIOC_GET_DCAP_QUOTE_SIZE == 0x80047307
    assert SGXIOC_GEN_DCAP_QUOTE == 0xC0187308


def test_quote_through_a_fake_device():
    dev = FakeSgxDevice(fx.quote())
    rd = bytes(range(64))
    quote = dev.quoter().quote(rd)
    assert len(quote) == len(fx.quote())
    assert quote[REPORT_DATA_AT:REPORT_DATA_AT + 64] == rd
    assert dev.requests == [SGXIOC_GET_DCAP_QUOTE_SIZE, SGXIOC_GEN_DCAP_QUOTE]
    assert dev.opened == [("/dev/sgx", os.O_RDONLY)] and dev.closed == [FD]
    with pytest.raises(ValueError):
        dev.quoter().quote(b"short")


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSYS])
def test_device_errors_are_clear_and_close_the_fd(err):
    dev = FakeSgxDevice(fx.quote(), fail=err)
    with pytest.raises(UnavailableError, match="GET_DCAP_QUOTE_SIZE failed"):
        dev.quoter().quote(bytes(64))
    assert dev.closed == [FD]


def test_implausible_quote_size_is_refused():
    dev = FakeSgxDevice(b"")
    with pytest.raises(UnavailableError, match="implausible"):
        dev.quoter().quote(bytes(64))


def test_occlum_backend_evidence_and_measurement():
    backend = OcclumBackend(FakeSgxDevice(fx.quote()).quoter())
    assert backend.name == "occlum" and not backend.simulated
    rd = bytes(reversed(range(64)))
    ev = backend.evidence(rd)
    assert set(ev) == {"type", "quote"} and ev["type"] == "sgx-dcap"
    assert b64d(ev["quote"])[REPORT_DATA_AT:REPORT_DATA_AT + 64] == rd
    assert backend.mrenclave == fx.MRENCLAVE


def test_key_service_attests_itself_through_the_occlum_backend(tmp_path):
    backend = OcclumBackend(FakeSgxDevice(fx.quote()).quoter())
    ks = KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", tee="occlum"), backend=backend)
    nonce = os.urandom(32)
    att = ks.self_attestation(nonce)
    assert att["tee"] == "occlum" and att["insecure_simulation"] is False
    quote = b64d(att["evidence"]["quote"])
    # REPORT_DATA binds both of the service's keys: HPKE (secrets to it) and signing (its answers)
    assert quote[REPORT_DATA_AT:REPORT_DATA_AT + 64] == report_data_binding(
        nonce, ks_response.identity(ks.hpke_public, ks.signing_public))
    assert ks.mrenclave == fx.MRENCLAVE


def test_factory():
    sim = make_backend("sim", sim_mrenclave=lambda: "ab" * 32, isv_prod_id=1, isv_svn=2, sim_debug=True)
    assert isinstance(sim, SimBackend) and (sim.mrenclave, sim.isv_svn, sim.debug) == ("ab" * 32, 2, True)

    def never() -> str:
        raise AssertionError("the sim measurement is not computed for occlum")

    # /dev/null is a character device: enough for construction, which only checks the device.
    occ = make_backend("occlum", sim_mrenclave=never, isv_prod_id=1, isv_svn=1, device="/dev/null")
    assert isinstance(occ, OcclumBackend)
    with pytest.raises(FormatError, match="unknown TEE backend"):
        make_backend("tdx", sim_mrenclave=never, isv_prod_id=1, isv_svn=1)


def test_missing_or_wrong_device_is_refused(tmp_path):
    with pytest.raises(UnavailableError, match="absent"):
        require_device(str(tmp_path / "sgx"))
    with pytest.raises(UnavailableError, match="not a character device"):
        check_available("occlum", device=str(tmp_path))  # the legacy host driver's /dev/sgx/ directory
    with pytest.raises(UnavailableError, match="absent"):
        make_backend("occlum", sim_mrenclave=str, isv_prod_id=1, isv_svn=1, device=str(tmp_path / "sgx"))
    check_available("sim", device=str(tmp_path / "sgx"))


def _no_occlum_device() -> None:
    try:
        is_chr = stat.S_ISCHR(os.stat("/dev/sgx").st_mode)
    except FileNotFoundError:
        is_chr = False
    assert not is_chr, "this test expects a machine outside Occlum (no /dev/sgx character device)"


def _sesemi(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundle_tool", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=30, env={**os.environ, "SESEMI_HOME": str(cwd / "home")})


@pytest.mark.parametrize("cmd", [
    ("action", "serve", "--tee", "occlum", "--pack", "x.pack", "--ks", "http://127.0.0.1:9", "--port", "0"),
    ("keyservice", "serve", "--tee", "occlum", "--db", "ks.db", "--port", "0"),
])
def test_serving_with_tee_occlum_refuses_to_start_without_dev_sgx(tmp_path, cmd):
    _no_occlum_device()
    p = _sesemi(*cmd, cwd=tmp_path)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("sesemi: error: TEE backend 'occlum' needs the Occlum LibOS device /dev/sgx")
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "ks.db").exists()
