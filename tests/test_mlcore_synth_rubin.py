"""Synthetic Rubin-like stamps and light curves (mlcore.synth_rubin)."""

import json

import numpy as np
import pytest

from mlcore.prep import InputSpec, pixel_scale_from_cd, prepare_subjects
from mlcore.synth import generate_triplets
from mlcore.synth_rubin import (
    ALL_SUBTYPES,
    BOGUS_SUBTYPES,
    MAX_STAMP,
    MIN_STAMP,
    REAL_SUBTYPES,
    flux_to_mag,
    generate_rubin,
    mag_to_flux,
    ztf_light_curves,
)

POINT_KEYS = {"mjd", "band", "flux_njy", "flux_err_njy", "mag", "mag_err", "kind"}


@pytest.fixture(scope="module")
def batch():
    return generate_rubin(140, seed=5, hard_fraction=0.3)


def test_stamps_are_rubin_sized_in_njy_with_matching_variance_planes(batch):
    assert len(batch) == 140 and set(batch.subtypes) == set(ALL_SUBTYPES)
    sizes = {s.shape[-1] for s in batch.stamps}
    assert min(sizes) >= MIN_STAMP and max(sizes) <= MAX_STAMP and len(sizes) > 10
    for stamp, variance in zip(batch.stamps, batch.variances, strict=True):
        assert stamp.dtype == variance.dtype == np.float32
        assert stamp.shape == variance.shape and stamp.shape[0] == 3 and stamp.shape[1] == stamp.shape[2]
        assert np.array_equal(np.isnan(stamp[0]), np.isnan(variance[0]))
    # Away from sources the difference's scatter is what its variance plane says (nJy, tens per pixel).
    ratios = []
    for stamp, variance, subtype in zip(batch.stamps, batch.variances, batch.subtypes, strict=True):
        if subtype in ("new_point_source", "cosmic_ray"):
            corner = stamp[2, :8, :8]
            ratios.append(np.nanstd(corner) / np.sqrt(np.nanmedian(variance[2, :8, :8])))
    assert 0.7 < np.median(ratios) < 1.5
    assert 5 < np.median([np.sqrt(np.nanmedian(v[2])) for v in batch.variances]) < 300


def test_every_stamp_has_a_rotated_wcs_at_0_2_arcsec(batch):
    rotations = []
    for meta, stamp in zip(batch.metadata, batch.stamps, strict=True):
        assert meta["survey"] == "rubin" and meta["flux_unit"] == "nJy"
        assert pixel_scale_from_cd(meta["cd"]) == pytest.approx(meta["pixel_scale"], rel=1e-6)
        assert meta["pixel_scale"] == pytest.approx(0.2, rel=0.01)
        assert meta["stampSize"] == stamp.shape[-1]
        assert abs(meta["x"] - (stamp.shape[-1] - 1) / 2) <= 0.5
        rotations.append(meta["rotation_deg"])
        json.dumps(meta)
    assert np.ptp(rotations) > 180


def test_doughnuts_are_rings_over_a_negative_core():
    batch = generate_rubin(6, seed=1, subtypes=["doughnut"])
    for stamp, meta in zip(batch.stamps, batch.metadata, strict=True):
        diff = np.nan_to_num(stamp[2])
        n = diff.shape[0]
        yy, xx = np.mgrid[0:n, 0:n]
        r = np.hypot(yy - meta["y"], xx - meta["x"])
        assert diff[r < 2].mean() < 0  # the in-focus template star subtracts
        ring = diff[(r > 0.7 * (n / 2 - 2)) & (r < 0.9 * (n / 2 - 2))]
        assert ring.mean() > 0 or meta["difficulty"] == "hard"


def test_same_arguments_same_output_and_subtypes_restrict_the_mix():
    a = generate_rubin(20, seed=3, hard_fraction=0.5)
    b = generate_rubin(20, seed=3, hard_fraction=0.5)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.stamps, b.stamps, strict=True))
    assert a.metadata == b.metadata and a.light_curves == b.light_curves
    bogus = generate_rubin(10, seed=3, subtypes=list(BOGUS_SUBTYPES))
    assert set(bogus.subtypes) <= set(BOGUS_SUBTYPES) and not bogus.labels.any()
    assert len(generate_rubin(0)) == 0
    with pytest.raises(ValueError, match="subtype"):
        generate_rubin(3, subtypes=["ghost"])


def test_every_subject_has_a_light_curve_ending_in_its_current_detection(batch):
    for curve, meta in zip(batch.light_curves, batch.metadata, strict=True):
        assert curve and all(set(p) - {"current"} == POINT_KEYS for p in curve)
        assert [p["mjd"] for p in curve] == sorted(p["mjd"] for p in curve)
        current = [p for p in curve if p.get("current")]
        assert current == [curve[-1]] and curve[-1]["kind"] == "detection"
        assert curve[-1]["band"] == meta["band"] and curve[-1]["flux_njy"] == pytest.approx(meta["psfFlux"])
        assert {p["kind"] for p in curve} <= {"detection", "forced"}  # Rubin: forced photometry, no limits
        json.dumps(curve)
    # New transients rise out of nothing: their earliest points are not detections.
    early = [
        c[0]["kind"]
        for c, s in zip(batch.light_curves, batch.subtypes, strict=True)
        if s == "new_point_source"
    ]
    assert early.count("forced") > len(early) / 2
    history = [
        sum(p["kind"] == "detection" for p in c[:-1]) for c, s in zip(batch.light_curves, batch.subtypes, strict=True)
        if s == "variable_star"
    ]  # fmt: skip
    assert np.mean(history) > 1


def test_ztf_subjects_get_light_curves_with_upper_limits():
    ztf = generate_triplets(30, seed=2)
    curves = ztf_light_curves(ztf.metadata, ztf.subtypes, seed=2)
    assert len(curves) == 30
    kinds = {p["kind"] for c in curves for p in c}
    assert kinds <= {"detection", "limit"} and "limit" in kinds
    for curve, meta in zip(curves, ztf.metadata, strict=True):
        assert curve[-1]["current"] and curve[-1]["mag"] == pytest.approx(meta["magpsf"], abs=1e-3)
        assert {p["band"] for p in curve} <= {"g", "r", "i"}
        for p in curve:
            if p["kind"] == "limit":
                assert p["flux_njy"] is None and p["mag"] > 15
    assert flux_to_mag(mag_to_flux(21.0)) == pytest.approx(21.0)


def test_rubin_and_ztf_stamps_make_one_model_input():
    rubin = generate_rubin(4, seed=0, subtypes=list(REAL_SUBTYPES))
    ztf = generate_triplets(2, seed=0)
    items = [
        (s, m["pixel_scale"], v)
        for s, m, v in zip(rubin.stamps, rubin.metadata, rubin.variances, strict=True)
    ]
    items += [(t, 1.01, None) for t in ztf.images]
    x = prepare_subjects(items, InputSpec(uncertainty=True))
    assert x.shape == (6, 4, 63, 63) and np.all(np.isfinite(x))
    # The candidate stays at the centre: the difference peaks there after resampling.
    for row in x[:4]:
        peak = np.unravel_index(np.argmax(np.abs(row[2])), row[2].shape)
        assert abs(peak[0] - 31) <= 1 and abs(peak[1] - 31) <= 1
