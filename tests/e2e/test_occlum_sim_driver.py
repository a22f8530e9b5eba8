"""ci/occlum_sim_e2e.py (the flow ci/occlum-sim.sh runs against the Occlum SIM
containers), run here against plain processes standing in for the containers,
so the driver cannot rot on machines without Docker and Occlum."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bundle_tool.home import Home
from bundle_tool.testing.processes import free_port, start_action
from sesemi import sealed_model
from sesemi.pack import build as build_pack

from ..conftest import DIGITS

REPO = Path(__file__).resolve().parents[2]


def test_sim_pipeline_driver_against_processes(tmp_path):
    home = Home(tmp_path / "home")
    key = sealed_model.new_model_key()
    header = sealed_model.seal_file(DIGITS, tmp_path / "digits.sealed", key, "digits")
    home.save_model_key("digits", key, header.seal_id)
    pack = tmp_path / "main.pack"
    build_pack(pack, [tmp_path / "digits.sealed"])

    # The key service under a restart loop, like a container under `docker restart`.
    port = free_port()
    pidfile, stop = tmp_path / "ks.pid", tmp_path / "stop"
    loop = (f'while [ ! -f {stop} ]; do "{sys.executable}" -m bundle_tool keyservice serve --db {tmp_path}/ks/ks.db '
            f'--port {port} --insecure-sim-attestation & echo $! > {pidfile}; wait $!; done')
    (tmp_path / "ks").mkdir()
    log = open(tmp_path / "ks.log", "wb")
    wrapper = subprocess.Popen(["bash", "-c", loop], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               start_new_session=True)
    restart = f'old=$(cat {pidfile}); kill $old; while kill -0 $old 2>/dev/null; do sleep 0.1; done; sleep 0.3'
    action = start_action(tmp_path, init=False, env={"SESEMI_PACK": str(pack)})
    try:
        ks_url = f"http://127.0.0.1:{port}"
        out = subprocess.run([sys.executable, "ci/occlum_sim_e2e.py", "--home", str(tmp_path / "home"),
                              "--ks", ks_url, "--ks-from-action", ks_url, "--action", action.url,
                              "--pack", str(pack), "--restart-ks", restart, "--upgrade-ks", restart],
                             capture_output=True, text=True, cwd=REPO, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "ks.log").read_text()[-2000:]
        assert "passed, 0 failed" in out.stdout
        assert "ok   after an upgrade (same signer, new build) the key service has the same HPKE key" in out.stdout
        assert "FAIL" not in out.stdout
    finally:
        action.stop()
        stop.touch()
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        try:
            wrapper.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(wrapper.pid, signal.SIGKILL)
            wrapper.wait()
        log.close()
        time.sleep(0)
