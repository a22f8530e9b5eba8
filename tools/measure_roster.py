"""What a model's roster costs (docs/protocol.md, "Refusing without the key
service"): the action's side at 10^6 members (memory, a lookup, applying a
change set, paging it in), and the key service's per-member cost of a page
and of a change set, measured on N members and scaled. Run from the
repository root:

    .venv/bin/python tools/measure_roster.py [N]
"""

import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from keyservice import roster_source  # noqa: E402
from keyservice.config import KeyServiceConfig  # noqa: E402
from keyservice.service import KeyService  # noqa: E402
from sesemi import hpke_box, roster  # noqa: E402
from sesemi.encoding import b64e  # noqa: E402
from sesemi.identity import Identity  # noqa: E402

MILLION = 1_000_000


def action_side() -> None:
    records = [(os.urandom(roster.ID_BYTES), 1) for _ in range(MILLION)]
    pages = [roster.encode(records[i:i + roster.PAGE]) for i in range(0, MILLION, roster.PAGE)]
    wire = sum(len(p) for p in pages)
    tracemalloc.start()
    t0 = time.perf_counter()
    r = roster.Roster.from_raw("m", [roster.decode_raw(p) for p in pages])  # as app/rosters.py pages it in
    build = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = len(r._base)
    t0 = time.perf_counter()
    n = 20_000
    for i in range(n):
        r.version_of(f"junk-{i}")
    lookup = (time.perf_counter() - t0) / n
    changes = roster.encode((os.urandom(roster.ID_BYTES), 2) for _ in range(1000))
    t0 = time.perf_counter()
    r.add(roster.decode(changes))
    r._merge()  # as when the overlay fills
    delta = time.perf_counter() - t0
    print(f"action, {MILLION:,} members: {len(pages)} pages, {wire / 1e6:.1f} MB of base64 on the wire; "
          f"held {held / 1e6:.1f} MB (peak while paging in {peak / 1e6:.0f} MB); paging in {build:.1f} s; "
          f"a lookup {lookup * 1e6:.1f} us; 1,000 changes applied in {delta * 1e3:.1f} ms")


def keyservice_side(n: int) -> None:
    work = Path(tempfile.mkdtemp())
    ks = KeyService(KeyServiceConfig(db_path=work / "ks.db", insecure_sim_attestation=True))
    owner = Identity.generate("o")
    ks.register_principal(owner.public_raw)
    seal = "5e" * 16
    box = hpke_box.seal(b"k" * 32, ks.hpke_public, hpke_box.info("model-key", "m", owner.principal_id, seal))
    ks.put_model(owner.principal_id, "m", {"wrapped_key": b64e(box), "policy": {"mrenclave": ["ab" * 32]},
                                           "seal_id": seal})
    t0 = time.perf_counter()
    for i in range(n):
        u = Identity.generate(f"u{i}")
        ks.register_principal(u.public_raw)
        ks.grant(owner.principal_id, "m", u.principal_id)
        rk = hpke_box.seal(b"r" * 32, ks.hpke_public, hpke_box.info("request-key", "m", u.principal_id))
        ks.put_request_key(u.principal_id, "m", {"wrapped_key": b64e(rk)})
    setup = time.perf_counter() - t0
    seq = ks.store.head().size
    t0 = time.perf_counter()
    after, members = "", 0
    while after is not None:
        page = roster_source.page(ks.store, "m", after)
        members += len(roster.decode(page["records"]))
        after = page["next"]
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    empty = roster_source.changes(ks.store, "m", seq)
    quiet = time.perf_counter() - t0
    per = whole / n
    print(f"key service, {n:,} members (set up in {setup:.0f} s): the whole roster in {whole:.2f} s "
          f"({per * 1e6:.0f} us a member: {per * MILLION / 60:.0f} min of one thread for {MILLION:,}); "
          f"a refresh with no change {quiet * 1e3:.1f} ms; listed {members}, changes {len(empty['records'])}")


if __name__ == "__main__":
    action_side()
    keyservice_side(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
