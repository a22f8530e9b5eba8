"""Start the servers as real processes (demo, tests, benchmarks) and wait until they answer."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path
    _log: IO[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start(name: str, args: Sequence[str], port: int, log_dir: Path, health_path: str,
          env: dict[str, str] | None = None, timeout: float = 60) -> Server:
    """Start `sesemi ARGS` (as `python -m bundle_tool`) and wait until it answers."""
    return start_process(name, [sys.executable, "-m", "bundle_tool", *args], port, log_dir, health_path, env,
                         timeout)


def start_process(name: str, argv: Sequence[str], port: int, log_dir: Path, health_path: str,
                  env: dict[str, str] | None = None, timeout: float = 60) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    server = Server(name, url, proc, log_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} exited with {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
        if _answers(port, health_path):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer within {timeout}s; log:\n{log_path.read_text()[-3000:]}")


def _answers(port: int, path: str) -> bool:
    """One health poll (1 s bound): any answer below 500 means the server is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def start_keyservice(workdir: Path, *, insecure_sim: bool = True, port: int | None = None,
                     extra: Sequence[str] = ()) -> Server:
    port = port or free_port()
    args = ["keyservice", "serve", "--db", str(workdir / "ks" / "ks.db"), "--port", str(port), *extra]
    if insecure_sim:
        args.append("--insecure-sim-attestation")
    return start("keyservice", args, port, workdir / "logs", "/healthz")


def start_action(workdir: Path, *, pack: Path | None = None, ks_url: str | None = None, init: bool = True,
                 port: int | None = None, extra: Sequence[str] = (), env: dict[str, str] | None = None,
                 name: str = "action") -> Server:
    port = port or free_port()
    args = ["action", "serve", "--port", str(port), *extra]
    if pack:
        args += ["--pack", str(pack)]
    if ks_url:
        args += ["--ks", ks_url]
    if init:
        args.append("--init")
    return start(name, args, port, workdir / "logs", "/stats", env=env)
