"""The CLI's one-line error quotes what a server answered, and a server (or
the host on the path) chooses that text: control characters in it must not
reach the terminal, where an escape sequence could rewrite what the user
sees, or a newline forge a second line."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bundle_tool.cli import main
from sesemi.encoding import json_dumps

FORGED = "\x1b]0;owned\x07\x1b[2K\rsesemi: key service pinned\n\u2028ok"


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json_dumps({"error": FORGED, "kind": "FormatError"})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_servers_error_text_reaches_stderr_without_control_characters(tmp_path, capsys):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code = main(["--home", str(tmp_path / "home"), "ks", "attest", f"http://127.0.0.1:{srv.server_port}",
                     "--insecure-sim"])
    finally:
        srv.shutdown()
        srv.server_close()
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f or ch in "\u2028\u2029" for ch in err[:-1]), repr(err)
    assert "\\x1b" in err  # shown escaped, not dropped
