"""The DCAP time floor follows the release (sesemi/build_stamp.py): a key
service never verifies at a time before it was built, whatever the host's
clock says, and a static check keeps the release date up with the commits."""

from __future__ import annotations

import json

import pytest

from keyservice import KeyService, KeyServiceConfig
from occlum_instance import render, sizing
from occlum_instance.checks import Layout, check_release_date, env_default
from sesemi import build_stamp
from sesemi.attestation.dcap import FLOOR_MARK, evidence_for_quote
from sesemi.errors import AttestationError, FormatError
from sesemi.measure import keyservice_mrenclave

from . import dcap_fixture as fx
from .test_keyservice_dcap import ALLOWING, _publish, attest_via_api

AFTER_EXPIRY = fx.WINDOW_END + 86400  # a day after the fixture collateral's nextUpdate


def _ks(tmp_path, **cfg) -> KeyService:
    collateral = tmp_path / "collateral.json"
    collateral.write_bytes(fx.collateral_json())
    return KeyService(KeyServiceConfig(db_path=tmp_path / "ks.db", collateral_file=collateral, **cfg),
                      clock=fx.clock(fx.INSIDE))  # the host set the clock back into the collateral's window


def _refused(ks: KeyService) -> None:
    _publish(ks, "m", ALLOWING)
    resp = attest_via_api(ks, fx.quote())
    assert resp.status_code == 403 and resp.get_json()["check"] == "clock_behind_floor", resp.get_json()
    with pytest.raises(AttestationError) as ei:  # no claims: no session, no key
        ks.evidence_claims(evidence_for_quote(fx.quote()))
    assert ei.value.check == "clock_behind_floor"


def test_an_image_built_after_the_collateral_expired_refuses_the_clock_set_back(tmp_path):
    """The build stamps its date into the measured env.default; the service
    started from it (keyservice/__main__.py reads it) floors time there."""
    config, _ = render.render("keyservice", "prod", [], sizing.Settings(), build_date=AFTER_EXPIRY)
    stamped = env_default(config)["SESEMI_BUILD_DATE"]
    built = build_stamp.build_date({"SESEMI_BUILD_DATE": stamped})
    assert built >= AFTER_EXPIRY
    ks = _ks(tmp_path, build_date=built)
    assert ks.store.mark(FLOOR_MARK) >= AFTER_EXPIRY  # seeded at first start from the build date
    _refused(ks)


def test_the_plain_build_floors_time_at_the_code_release_date(tmp_path):
    """No stamp at all (a plain `sesemi ks serve`): the code's release date,
    which is after the fixture's expiry. The old floor was the fixture's own
    date, and the expired quote verified with the clock set to 2025-07-01."""
    assert build_stamp.release_date() > fx.WINDOW_END
    _refused(_ks(tmp_path))


def test_the_build_date_is_measured_and_never_lowers_the_floor():
    a = KeyServiceConfig(db_path="x.db", build_date=AFTER_EXPIRY)
    b = KeyServiceConfig(db_path="x.db", build_date=AFTER_EXPIRY + 1)
    assert keyservice_mrenclave(a.trusted()) != keyservice_mrenclave(b.trusted())  # sim measures it
    assert build_stamp.build_date({"SESEMI_BUILD_DATE": "2020-01-01T00:00:00Z"}) == build_stamp.release_date()
    with pytest.raises(FormatError):
        build_stamp.build_date({"SESEMI_BUILD_DATE": "yesterday"})


def test_render_stamps_source_date_epoch(tmp_path, monkeypatch):
    epoch = build_stamp.release_date() + 10 * 86400
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(epoch)))
    assert render.main(["--appliance", "keyservice", "--config", "dev", "--out", str(tmp_path / "o.json")]) == 0
    env = env_default(json.loads((tmp_path / "o.json").read_text()))
    assert env["SESEMI_BUILD_DATE"] == build_stamp.stamp(epoch)


def test_static_check_fails_when_the_seed_lags_the_newest_commit():
    seed = build_stamp.release_date()
    assert check_release_date(Layout(), commit_time=seed + 86400) == []
    late = check_release_date(Layout(), commit_time=seed + (build_stamp.MAX_LAG_DAYS + 1) * 86400)
    assert len(late) == 3 and all("move the release date forward" in f for f in late), late
    assert any("build_stamp.py" in f for f in late) and sum("keyservice." in f for f in late) == 2
    # The committed files against this checkout's newest commit.
    assert check_release_date(Layout()) == []
