"""The action's model store: LRU under a memory budget, evicting before it
decrypts, never evicting a model in use; the interpreter pool runs requests."""

from pathlib import Path

import numpy as np
import pytest

from app.models import ModelStore
from sesemi import sealed_model
from sesemi.errors import FormatError, ModelUnavailable, NotFound
from sesemi.pack import Pack, build

DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits" / "digits.tflite"


@pytest.fixture()
def pack3(tmp_path):
    keys, sealed = {}, []
    for mid in ("a", "b", "c"):
        keys[mid] = sealed_model.new_model_key()
        out = tmp_path / f"{mid}.sealed"
        sealed_model.seal_file(DIGITS, out, keys[mid], mid)
        sealed.append(out)
    build(tmp_path / "p.pack", sealed)
    pack = Pack(tmp_path / "p.pack")
    yield pack, keys
    pack.close()


def _store(pack, keys, n_models_fit: int, fetched: list | None = None):
    size = DIGITS.stat().st_size

    def key(mid):
        if fetched is not None:
            fetched.append(mid)
        return keys[mid]
    return ModelStore(pack, pool_size=2, interp_threads=1, budget_bytes=n_models_fit * 2 * size + 1, model_key=key)


def test_lru_keeps_what_fits_and_evicts_least_recent(pack3):
    pack, keys = pack3
    fetched = []
    store = _store(pack, keys, 2, fetched)
    for mid in ("a", "b", "a", "c"):
        store.release(store.acquire(mid))
    assert store.loaded_ids == ["a", "c"]  # b was least recently used
    assert store.stats.loads == 3 and store.stats.evictions == 1
    store.release(store.acquire("a"))
    assert store.stats.loads == 3  # hit
    assert fetched == ["a", "b", "c"]


def test_capacity_one_reloads_on_every_switch(pack3):
    pack, keys = pack3
    store = _store(pack, keys, 1)
    for mid in ("a", "b", "a", "b"):
        store.release(store.acquire(mid))
    assert store.stats.loads == 4


def test_model_in_use_is_not_evicted(pack3):
    pack, keys = pack3
    store = _store(pack, keys, 1)
    held = store.acquire("a")
    store.release(store.acquire("b"))
    assert "a" in store.loaded_ids  # over budget for a moment rather than pull a model from under a request
    store.release(held)


def test_pool_runs_and_checks_inputs(pack3):
    pack, keys = pack3
    store = _store(pack, keys, 3)
    m = store.acquire("a")
    x = np.zeros((3, 8, 8, 1), np.float32)
    out = m.pool.run({"image": x})
    assert next(iter(out.values())).shape == (3, 10)
    out1 = m.pool.run({"whatever-name": x[:1]})  # by position when names do not match
    assert next(iter(out1.values())).shape == (1, 10)
    with pytest.raises(FormatError, match="takes 1 input"):
        m.pool.run({"a": x, "b": x})
    store.release(m)


def test_wrong_key_and_unknown_model(pack3):
    pack, keys = pack3
    bad = dict(keys, b=sealed_model.new_model_key())
    store = _store(pack, bad, 3)
    with pytest.raises(ModelUnavailable, match="does not authenticate"):
        store.acquire("b")
    with pytest.raises(NotFound):
        store.acquire("zzz")
