"""A minimal blackbox action for the emulator's own tests (standard library
only, starts in tens of ms): POST /init stores value.env (refuses when env
FAIL_INIT is set; sleeps env INIT_SLEEP seconds); POST /run sleeps value.sleep seconds and answers its pid,
the init env's X and value.echo, the /init and /run bodies it received
(value.show); value.answer picks another answer: "apperr" (200 + error),
"deverr" (HTTP 400), "array", "big" (over 1 MiB), "shutdown" (503). Listens on 127.0.0.1:$PORT, as the emulator's image contract says."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENV: dict = {}
INIT: dict = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.loads(raw or b"{}")
        if self.path == "/init":
            INIT.update(body)
            ENV.update(body.get("value", {}).get("env") or {})
            time.sleep(float(ENV.get("INIT_SLEEP", 0)))
            if ENV.get("FAIL_INIT"):
                return self._send(502, {"error": {"kind": "UnavailableError", "status": 503,
                                                  "message": f"refused: {ENV['FAIL_INIT']}"}})
            return self._send(200, {"ok": True})
        value = body.get("value", {})
        time.sleep(float(value.get("sleep", 0)))
        answer = value.get("answer")
        if answer == "apperr":
            return self._send(200, {"error": {"kind": "FormatError", "status": 400, "message": "bad"}, "x": 1})
        if answer == "deverr":
            return self._send(400, {"error": "bad request from the fake"})
        if answer == "array":
            return self._send(200, [1, 2, 3])  # type: ignore[arg-type]
        if answer == "big":
            return self._send(200, {"blob": "x" * (1 << 20)})
        if answer == "shutdown":
            return self._send(503, {"error": "shutting down"})
        self._send(200, {"pid": os.getpid(), "x": ENV.get("X"), "echo": value.get("echo"),
                         "activation_id": body.get("activation_id"),
                         **({"init": INIT, "run": body, "proc_api_host": os.environ.get("__OW_API_HOST")}
                            if value.get("show") else {})})


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
