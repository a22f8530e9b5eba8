"""LiteRT on the owner's machine (the demo's plaintext reference, the check
`sesemi model seal` runs before sealing), without its start-up banner.

LiteRT's XNNPACK delegate writes `INFO: Created TensorFlow Lite XNNPACK
delegate for CPU.` to file descriptor 2 from C++ (TFLITE_LOG_PROD_ONCE in the
delegate's creation, once per process, at the first AllocateTensors). Its
minimal logger's threshold is not reachable from Python (it lives in an
anonymous namespace of the shared library), and no environment variable sets
it. So the first allocation runs with fd 2 captured, and everything captured
except that one line is written back: real errors still reach stderr."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - older platforms only have tflite-runtime
    from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

from sesemi.errors import FormatError

BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite file
_lock = threading.Lock()
_banner_seen = False


@contextmanager
def _without_banner() -> Iterator[None]:
    global _banner_seen
    if _banner_seen:
        yield
        return
    with _lock, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read()
            if BANNER in text:
                _banner_seen = True
                text = text.replace(BANNER, b"", 1)
            if text:
                os.write(2, text)


def interpreter(content: bytes, num_threads: int | None = None) -> Any:
    """An allocated interpreter over `content` (the banner swallowed)."""
    with _without_banner():
        interp = Interpreter(model_content=content, num_threads=num_threads)
        interp.allocate_tensors()
    return interp


def allocate(interp: Any) -> None:
    with _without_banner():
        interp.allocate_tensors()


def check_tflite(path: str | os.PathLike) -> bytes:
    """The model's bytes, if they are a TFLite flatbuffer that the interpreter
    loads and allocates; a FormatError naming what is wrong otherwise. LiteRT's
    own messages can quote the model buffer, so only the exception type is kept."""
    content = Path(path).read_bytes()
    if not content:
        raise FormatError(f"{path}: empty file, not a TFLite model")
    if content[4:8] != TFLITE_IDENTIFIER:
        raise FormatError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        interpreter(content, num_threads=1)
    except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError, RuntimeError, TypeError ...
        raise FormatError(f"{path}: the TFLite interpreter does not load it ({type(exc).__name__})") from None
    return content
