"""A pool of LiteRT interpreters over one in-memory model.

`invoke()` releases the GIL, so N interpreters let N requests compute at
once. Interpreters are built lazily up to the pool size and share the one
plaintext model buffer (LiteRT keeps a reference to `model_content`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from sesemi.errors import FormatError

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - older platforms only have tflite-runtime
    from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]


class InterpreterPool:
    def __init__(self, model_content: bytes, size: int, num_threads: int = 1, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self._content = model_content
        self._num_threads = num_threads
        self._size = size
        # A stack, not a queue: the most recently released interpreter goes out
        # first, so one client keeps reusing the interpreter whose packed weights
        # and arena are warm in the caches; a FIFO alternates between them
        # (docs/performance.md).
        self._free: list[Any] = []
        self._cond = threading.Condition(threading.Lock())
        self._built = 0
        self._building = 0
        self._shapes: dict[int, dict[int, tuple[int, ...]]] = {}
        # Recent set_tensor + invoke + get_tensor times: the same span a bare
        # in-process invoke measures, so a benchmark can set the two side by side.
        self.invoke_s: deque[float] = deque(maxlen=1000)
        first = self._build()  # fail now, at load, if the model is not a valid TFLite file
        self.input_details = first.get_input_details()
        self.output_details = first.get_output_details()
        self._free.append(first)

    def _build(self) -> Any:
        try:
            interp = Interpreter(model_content=self._content, num_threads=self._num_threads)
            interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            # LiteRT's messages can quote the whole model buffer (its TypeError
            # prints the argument): keep only the exception type.
            raise FormatError(f"model does not load as TFLite ({type(exc).__name__})") from None
        with self._cond:
            self._built += 1
        return interp

    def _checkout(self) -> Any:
        with self._cond:
            while not self._free:
                if self._built + self._building < self._size:
                    self._building += 1
                    break
                self._cond.wait()
            else:
                return self._free.pop()
        # More interpreters only when requests overlap (a container that the
        # platform gives one request at a time never builds a second).
        try:
            return self._build()
        finally:
            with self._cond:
                self._building -= 1
                self._cond.notify()

    @contextmanager
    def interpreter(self) -> Iterator[Any]:
        interp = self._checkout()
        try:
            yield interp
        finally:
            with self._cond:
                self._free.append(interp)
                self._cond.notify()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self._match_inputs(inputs)
        with self.interpreter() as interp:
            # Shapes each interpreter is allocated for, tracked here: asking the
            # interpreter (get_input_details) costs more than a small model's invoke.
            current = self._shapes.setdefault(id(interp), {})
            resized = False
            for det, arr in zip(self.input_details, arrays):
                if current.get(det["index"], tuple(det["shape"])) != arr.shape:
                    interp.resize_tensor_input(det["index"], list(arr.shape))
                    current[det["index"]] = arr.shape
                    resized = True
            if resized:
                interp.allocate_tensors()
            t0 = time.perf_counter()
            for det, arr in zip(self.input_details, arrays):
                interp.set_tensor(det["index"], arr)
            interp.invoke()
            out = {det["name"]: interp.get_tensor(det["index"]) for det in self.output_details}
            self.invoke_s.append(time.perf_counter() - t0)
            return out

    def _match_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        dets = self.input_details
        if len(inputs) != len(dets):
            raise FormatError(f"model takes {len(dets)} input tensor(s), request has {len(inputs)}")
        names = [d["name"] for d in dets]
        ordered = [inputs[n] for n in names] if set(inputs) == set(names) else list(inputs.values())
        out = []
        for det, arr in zip(dets, ordered):
            if arr.dtype != det["dtype"]:
                raise FormatError(f"input {det['name']!r}: dtype {arr.dtype.name}, model expects "
                                  f"{np.dtype(det['dtype']).name}")
            sig = det.get("shape_signature", det["shape"])
            if len(arr.shape) != len(sig) or any(s != -1 and s != a for s, a in zip(sig, arr.shape)):
                raise FormatError(f"input {det['name']!r}: shape {list(arr.shape)} does not fit "
                                  f"{[int(s) for s in sig]}")
            if 0 in arr.shape:
                raise FormatError(f"input {det['name']!r}: empty tensor")
            # A dynamic dimension resizes this interpreter's arena for good: bound it,
            # or one request could grow the action far past its memory budget.
            if any(s == -1 and a > self.max_batch for s, a in zip(sig, arr.shape)):
                raise FormatError(f"input {det['name']!r}: a dynamic dimension above {self.max_batch}")
            out.append(arr)
        return out

