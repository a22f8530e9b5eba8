"""A real PostgreSQL server for tests and benchmarks: Debian's postgresql package,
started in a temporary directory on a loopback port. PostgreSQL refuses to
run as root, so as root it runs as the `postgres` user (runuser)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .processes import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


@dataclass
class PgServer:
    data: Path
    port: int
    bin: Path
    as_root: bool

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://sesemi@127.0.0.1:{self.port}/{db}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and res.returncode:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({res.returncode}): {res.stderr.strip()[-800:]}")
        return res

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", "sesemi", "-d", db, "-c", sql).stdout

    def create_db(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)


    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)
        if not os.environ.get("SESEMI_KEEP_PG"):
            shutil.rmtree(self.data.parent, ignore_errors=True)


def start() -> PgServer:
    binary = pg_bin()
    if binary is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; .ci/run does this)")
    as_root = os.geteuid() == 0
    # Not under the session's TMPDIR: pytest resets /tmp/pytest-of-USER to 0700 whenever
    # any session starts (this machine runs several), which would lock the postgres
    # user out of its data directory mid-run. The server holds only sealed rows.
    root = Path(tempfile.mkdtemp(prefix="sesemi-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    data = root / "data"
    data.mkdir()
    if as_root:
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    srv = PgServer(data, free_port(), binary, as_root)
    srv._run(str(binary / "initdb"), "-D", str(data), "-A", "trust", "-U", "sesemi", "--no-sync", "-E", "UTF8")
    opts = (f"-p {srv.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c shared_buffers=32MB")
    srv._run(str(binary / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w",
             "-t", "60", "start")
    return srv
