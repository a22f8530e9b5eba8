"""The owner's plaintext reference run: the model on the owner's own machine,
no enclave, no encryption. What the encrypted path's answers are compared to
(demo, tests, the Occlum SIM pipeline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..litert import allocate, interpreter


def plaintext_outputs(model_path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output tensor for input batch `x`, keyed by the interpreter's tensor names."""
    interp = interpreter(Path(model_path).read_bytes())
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    allocate(interp)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
