"""The key service under an anonymous caller's weight:
the body bytes it takes before refusing an oversized one, and a signed
call's latency while one client holds 200 idle connections. The figures are
in docs/protocol.md; run from the repository root:

    .venv/bin/python tools/measure_keyservice_limits.py

(Table growth under a flood: tests/e2e/test_keyservice_flood.py prints it.)
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bundle_tool.testing.processes import start_keyservice
from tests.e2e.test_keyservice_limits import body_read_before_refusal, hold_idle_connections, stream_until_answered
from sesemi.client import KeyServiceClient, attest_key_service
from sesemi.identity import Identity
from sesemi.timeouts import Timeouts

work = Path(tempfile.mkdtemp())
srv = start_keyservice(work)
try:
    sent, status = body_read_before_refusal(srv, 1 << 30, 256 << 20)
    print(f"Content-Length 1 GiB: status {status}, bytes the client could push before the answer: {sent}")
    # chunked
    sent, status = stream_until_answered(
        srv, b"POST /v1/enclave/attest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"10000\r\n" + b"x" * 65536 + b"\r\n", 256 << 20)
    print(f"chunked body: status {status}, bytes pushed before the answer: {sent}")
    pin = attest_key_service(srv.url, insecure_sim=True)
    c = KeyServiceClient(pin, Timeouts(5, 10))
    o = Identity.generate("o")
    c.register(o)
    base = []
    for _ in range(20):
        t0 = time.perf_counter()
        c.audit(o)
        base.append(time.perf_counter() - t0)
    held = hold_idle_connections(srv, 200)
    time.sleep(0.3)
    lat = []
    for _ in range(20):
        c2 = KeyServiceClient(pin, Timeouts(5, 10), counter=c.counter)  # a fresh connection each time
        t0 = time.perf_counter()
        c2.audit(o)
        lat.append(time.perf_counter() - t0)
    for h in held:
        h.close()
    print(
        f"signed call (GET /v1/audit), idle server: p50 {statistics.median(base) * 1e3:.1f} ms; "
        f"with 200 idle connections held by one client, new connection each: p50 {statistics.median(lat) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms"
    )
finally:
    srv.stop()
