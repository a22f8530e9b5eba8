"""The `occlum` TEE backend: SGX DCAP quotes from the Occlum LibOS.

Inside an Occlum enclave, `/dev/sgx` is a LibOS device (not the host's SGX
driver) whose ioctls reach the quoting enclave through Occlum's untrusted
runtime. This module speaks the same ioctls as Occlum's `dcap_lib`:

  source (occlum/occlum repository)                       what we take
  tools/toolchains/dcap_lib/src/occlum_dcap.rs            request numbers, call order
  src/libos/src/fs/dev_fs/dev_sgx/consts.rs               numbers derived from (nr, 's', direction, arg type)
  src/libos/src/fs/dev_fs/dev_sgx/mod.rs                  IoctlGenDCAPQuoteArg, the LibOS's checks

Request numbers follow Linux's _IOC(dir, type, nr, size) = dir<<30 | size<<16 | type<<8 | nr,
with type 's' (0x73):

  SGXIOC_GET_DCAP_QUOTE_SIZE = _IOR('s', 7, uint32_t)                  = 0x80047307
  SGXIOC_GEN_DCAP_QUOTE      = _IOWR('s', 8, IoctlGenDCAPQuoteArg)      = 0xc0187308

Argument layouts (x86-64, the only architecture Occlum runs on; little endian,
8-byte pointers):

  GET_DCAP_QUOTE_SIZE: uint32_t quote_size                             (output, 4 bytes)
  GEN_DCAP_QUOTE:      struct IoctlGenDCAPQuoteArg {                   (24 bytes)
                           const sgx_report_data_t *report_data;       // in: 64 bytes
                           uint32_t *quote_size;                       // in: buffer size (>= quote size)
                           uint8_t  *quote_buf;                        // out: the quote
                       }

The LibOS refuses a buffer smaller than the quote size and writes exactly
quote-size bytes, so we ask for the size first, as dcap_lib does.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct
import threading
from typing import Any, Callable

from ..errors import UnavailableError
from . import dcap

DEVICE = "/dev/sgx"
TYPE = "occlum"

_IOC_WRITE, _IOC_READ = 1, 2
_SGX_MAGIC = ord("s")

GEN_ARG = struct.Struct("<QQQ")       # IoctlGenDCAPQuoteArg: three pointers
QUOTE_SIZE_ARG = struct.Struct("<I")  # uint32_t
REPORT_DATA_LEN = 64                  # sgx_report_data_t
MAX_QUOTE_SIZE = dcap.MAX_QUOTE_BYTES


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_SGX_MAGIC << 8) | nr


SGXIOC_GET_DCAP_QUOTE_SIZE = _ioc(_IOC_READ, 7, QUOTE_SIZE_ARG.size)
SGXIOC_GEN_DCAP_QUOTE = _ioc(_IOC_READ | _IOC_WRITE, 8, GEN_ARG.size)

IoctlFn = Callable[[int, int, bytearray, bool], Any]
OpenFn = Callable[[str, int], int]


def require_device(path: str = DEVICE) -> None:
    """Fail with a clear message unless `path` is Occlum's SGX character device.
    Outside Occlum it is absent, or (legacy out-of-tree host driver) a directory."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnavailableError(
            f"TEE backend 'occlum' needs the Occlum LibOS device {path}, which is absent: this process "
            f"is not running inside an Occlum enclave (use --tee sim for development)") from None
    except OSError as exc:
        raise UnavailableError(f"TEE backend 'occlum': cannot stat {path} ({exc.strerror})") from None
    if not stat.S_ISCHR(st.st_mode):
        raise UnavailableError(
            f"TEE backend 'occlum': {path} is not a character device (a host SGX driver directory?): "
            f"this process is not running inside an Occlum enclave")


class OcclumQuoter:
    """Generates DCAP quotes through /dev/sgx. `ioctl` and `opener` are
    injectable so tests can stand in a fake device."""

    def __init__(self, device: str = DEVICE, *, ioctl: IoctlFn = fcntl.ioctl,
                 opener: OpenFn = os.open, closer: Callable[[int], None] = os.close) -> None:
        self.device = device
        self._ioctl = ioctl
        self._open = opener
        self._close = closer
        self._lock = threading.Lock()  # one quote at a time: the QE is a shared, serial resource

    def _call(self, fd: int, request: int, arg: bytearray, what: str) -> None:
        try:
            self._ioctl(fd, request, arg, True)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise UnavailableError(f"{self.device}: {what} failed ({name}); is the DCAP quote "
                                   f"provider configured on the host?") from None

    def quote(self, report_data: bytes) -> bytes:
        if len(report_data) != REPORT_DATA_LEN:
            raise ValueError("report_data must be 64 bytes")
        with self._lock:
            try:
                fd = self._open(self.device, os.O_RDONLY)
            except OSError as exc:
                raise UnavailableError(f"cannot open {self.device} ({exc.strerror})") from None
            try:
                size_arg = bytearray(QUOTE_SIZE_ARG.size)
                self._call(fd, SGXIOC_GET_DCAP_QUOTE_SIZE, size_arg, "GET_DCAP_QUOTE_SIZE")
                (size,) = QUOTE_SIZE_ARG.unpack(size_arg)
                if not dcap.HEADER_LEN < size <= MAX_QUOTE_SIZE:
                    raise UnavailableError(f"{self.device}: implausible DCAP quote size {size}")
                # The LibOS reads and writes through these pointers, so they must
                # stay alive (referenced here) until the ioctl returns.
                rd_buf = ctypes.create_string_buffer(bytes(report_data), REPORT_DATA_LEN)
                size_buf = ctypes.c_uint32(size)
                quote_buf = ctypes.create_string_buffer(size)
                arg = bytearray(GEN_ARG.pack(ctypes.addressof(rd_buf), ctypes.addressof(size_buf),
                                             ctypes.addressof(quote_buf)))
                self._call(fd, SGXIOC_GEN_DCAP_QUOTE, arg, "GEN_DCAP_QUOTE")
                written = size_buf.value if 0 < size_buf.value <= size else size
                return quote_buf.raw[:written]
            finally:
                self._close(fd)


class OcclumBackend:
    """Evidence {"type": "sgx-dcap", "quote": base64} from the hardware. The
    measurement is whatever the CPU measured; we read it back from a quote."""

    name = TYPE
    simulated = False

    def __init__(self, quoter: OcclumQuoter | None = None, *, device: str = DEVICE) -> None:
        if quoter is None:
            require_device(device)
            quoter = OcclumQuoter(device)
        self.quoter = quoter
        self._mrenclave: str | None = None

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return dcap.evidence_for_quote(self.quoter.quote(report_data))

    @property
    def mrenclave(self) -> str:
        """For logs and `measure`: parsed, not verified (it is our own quote)."""
        if self._mrenclave is None:
            quote = self.quoter.quote(bytes(REPORT_DATA_LEN))
            self._mrenclave = dcap._qvl().parse_quote(quote).report.mr_enclave.hex()
        return self._mrenclave
