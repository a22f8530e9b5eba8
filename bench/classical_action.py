"""The action as it was before hybrid key transport, for bench_pq.py's
baseline only: `python bench/classical_action.py` runs `python -m app` with
the enclave's ephemeral key made X25519-only, its release boxes opened under
X25519 and no ML-KEM start-up check. The product has no such switch (a host
could otherwise turn the downgrade on); the benchmark's key service accepts
the X25519 enclave with --insecure-allow-classical-kem."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sesemi import hpke_box  # noqa: E402

_new, _open = hpke_box.new_private_key, hpke_box.open_
hpke_box.new_private_key = lambda kem=hpke_box.CLASSICAL: _new(kem)
hpke_box.open_ = lambda box, recipient, info, allow_classical=True: _open(box, recipient, info, True)
hpke_box.check_backend = lambda: None

runpy.run_module("app", run_name="__main__", alter_sys=True)
