"""A minimal blackbox action for the emulator's own tests (standard library
only, starts in tens of ms): POST /init stores value.env (refuses when env
FAIL_INIT is set); POST /run sleeps value.sleep seconds and answers its pid,
the init env's X and value.echo; value.fail makes it answer an application
error. Listens on 127.0.0.1:$PORT, as the emulator's image contract says."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENV: dict = {}


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
            ENV.update(body.get("value", {}).get("env") or {})
            if ENV.get("FAIL_INIT"):
                return self._send(503, {"error": f"refused: {ENV['FAIL_INIT']}", "kind": "UnavailableError"})
            return self._send(200, {"ok": True})
        value = body.get("value", {})
        time.sleep(float(value.get("sleep", 0)))
        if value.get("fail"):
            return self._send(400, {"error": "bad request from the fake", "kind": "FormatError"})
        self._send(200, {"pid": os.getpid(), "x": ENV.get("X"), "echo": value.get("echo"),
                         "activation_id": body.get("activation_id")})


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
