"""Bench-only: the action's own HTTP layer (app.server) with a handler that
does nothing. It reads the request body, as the action does, and answers a
fixed body of a given size. The latency benchmark posts a real request's
bytes to it: that is the transport floor under any work the action does.

    python -m bench.echo_server PORT RESPONSE_BYTES
"""

from __future__ import annotations

import sys


from app.server import ActionHTTPServer


class EchoService:
    def __init__(self, response_bytes: int) -> None:
        self.body = b'{"x":"' + b"A" * max(0, response_bytes - 8) + b'"}'

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return 200, self.body


if __name__ == "__main__":
    port, size = int(sys.argv[1]), int(sys.argv[2])
    ActionHTTPServer(("127.0.0.1", port), EchoService(size), max_connections=8, max_body=64 << 20).serve_forever()
