"""Bench-only: the plaintext server a user would run without security.

Flask + LiteRT behind the same threaded WSGI server as the action, with the
same fast codecs (orjson, pybase64), so that comparing it with the action
isolates the price of security. Not part of the product.

    python -m bench.plain_server MODEL.tflite PORT [INTERP_THREADS] [POOL]
"""

from __future__ import annotations

import queue
import sys

import numpy as np
import orjson
import pybase64
from flask import Flask, Response, request

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover
    from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]


def create_app(model_path: str, threads: int = 1, pool_size: int = 2) -> Flask:
    content = open(model_path, "rb").read()
    pool: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(pool_size):
        it = Interpreter(model_content=content, num_threads=threads)
        it.allocate_tensors()
        pool.put(it)
    app = Flask("plain")

    @app.post("/run")
    def run() -> Response:
        v = orjson.loads(request.get_data())["value"]
        x = np.frombuffer(pybase64.b64decode(v["data"]), dtype=v["dtype"]).reshape(v["shape"])
        it = pool.get()
        try:
            inp = it.get_input_details()[0]
            if tuple(inp["shape"]) != x.shape:
                it.resize_tensor_input(inp["index"], list(x.shape))
                it.allocate_tensors()
            it.set_tensor(inp["index"], x)
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"])
        finally:
            pool.put(it)
        return Response(orjson.dumps({"data": pybase64.b64encode_as_string(out.tobytes()),
                                      "shape": list(out.shape), "dtype": out.dtype.name}),
                        mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return Response("{}", mimetype="application/json")

    return app


if __name__ == "__main__":
    import waitress

    model, port = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    pool = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    # Same server tuning as the action (app.WAITRESS_TUNING), so only security differs.
    waitress.serve(create_app(model, threads, pool), host="127.0.0.1", port=port, threads=8, _quiet=True,
                   recv_bytes=1 << 18, inbuf_overflow=1 << 27, outbuf_overflow=1 << 27)
