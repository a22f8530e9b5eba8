"""Peers that never answer: what a partition or a frozen process looks like
from the client's side."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def accepts_but_never_answers() -> Iterator[str]:
    """A listener that accepts connections and reads, but never writes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


@contextmanager
def never_accepts() -> Iterator[str]:
    """A listener whose accept queue is full: further SYNs are dropped (Linux),
    so a connect hangs until the client's connect timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    addr = srv.getsockname()
    fillers = []
    for _ in range(4):  # a backlog of 0 still queues one or two; fill them
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(addr)
        fillers.append(s)
    try:
        yield f"http://127.0.0.1:{addr[1]}"
    finally:
        for s in fillers:
            s.close()
        srv.close()
