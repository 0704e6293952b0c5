"""The synthetic ZTF-like triplet generator (mlcore.synth)."""

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from mlcore.synth import (
    BOGUS_SUBTYPES,
    REAL_SUBTYPES,
    SUBTYPE_DESCRIPTIONS,
    SynthBatch,
    generate_one,
    generate_triplets,
)

AVRO_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ztf" / "avro"


@pytest.fixture(scope="module")
def batch() -> SynthBatch:
    return generate_triplets(450, seed=123)


def test_shapes_dtypes_and_metadata(batch):
    assert batch.images.shape == (450, 3, 63, 63) and batch.images.dtype == np.float32
    assert batch.labels.shape == (450,) and batch.labels.dtype == np.int8
    assert len(batch.subtypes) == len(batch.metadata) == len(batch) == 450
    assert set(np.unique(batch.labels)) == {0, 1}
    for label, subtype in zip(batch.labels, batch.subtypes, strict=True):
        assert subtype in (REAL_SUBTYPES if label == 1 else BOGUS_SUBTYPES)
    json.dumps(batch.metadata)  # JSON-serialisable
    for key in ("ra", "dec", "magpsf", "sigmapsf", "fwhm", "isdiffpos", "jd", "fid", "rb", "elong"):
        assert key in batch.metadata[0]
    mags = np.array([m["magpsf"] for m in batch.metadata])
    assert np.all(np.isfinite(mags)) and 8 < mags.min() and mags.max() < 23
    assert {m["isdiffpos"] for m in batch.metadata} == {"t", "f"}
    assert all(-31 <= m["dec"] <= 90 and 0 <= m["ra"] < 360 for m in batch.metadata)


def test_all_subtypes_present_with_descriptions(batch):
    assert set(batch.subtypes) == set(REAL_SUBTYPES) | set(BOGUS_SUBTYPES)
    assert set(SUBTYPE_DESCRIPTIONS) == set(REAL_SUBTYPES) | set(BOGUS_SUBTYPES)
    assert all(len(text) > 30 for text in SUBTYPE_DESCRIPTIONS.values())


def test_deterministic_for_a_seed():
    a = generate_triplets(40, seed=7, hard_fraction=0.3)
    b = generate_triplets(40, seed=7, hard_fraction=0.3)
    c = generate_triplets(40, seed=8, hard_fraction=0.3)
    np.testing.assert_array_equal(a.images, b.images)  # NaNs compare equal here
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.subtypes == b.subtypes and a.metadata == b.metadata
    assert not np.array_equal(a.images, c.images, equal_nan=True)


def test_masked_bright_stars_have_nan_cores_and_others_rarely_do(batch):
    nan_any = np.isnan(batch.images).any(axis=(1, 2, 3))
    masked = np.array([s == "masked_bright_star" for s in batch.subtypes])
    assert masked.sum() > 10
    assert nan_any[masked].all()
    centre = batch.images[masked][:, 0, 29:34, 29:34]
    assert np.isnan(centre).any(axis=(1, 2)).all(), "the saturated core is at the centre"
    assert nan_any[~masked].mean() < 0.05
    # Masked pixels of the science image are masked in the difference too.
    sci_nan = np.isnan(batch.images[:, 0])
    assert np.isnan(batch.images[:, 2][sci_nan]).all()


def test_physics_of_real_subtypes():
    new = generate_triplets(30, seed=1, subtypes=["new_point_source"])
    var = generate_triplets(30, seed=1, subtypes=["variable_star"])
    assert new.labels.all() and var.labels.all()

    def centre(images, channel):
        return np.nanmedian(images[:, channel, 29:34, 29:34], axis=(1, 2))

    def background(images, channel):
        return np.nanmedian(images[:, channel], axis=(1, 2))

    # New source: something at the centre of the science image, nothing in the reference.
    assert np.median(centre(new.images, 0) - background(new.images, 0)) > 10
    assert np.median(np.abs(centre(new.images, 1) - background(new.images, 1))) < 5
    # Variable star: a star in the reference too.
    assert np.median(centre(var.images, 1) - background(var.images, 1)) > 10
    # Difference images are sky-subtracted.
    assert abs(np.nanmedian(new.images[:, 2])) < 2


def test_real_fraction_subtypes_and_size():
    b = generate_triplets(101, seed=3, real_fraction=0.2, size=41)
    assert b.images.shape == (101, 3, 41, 41)
    assert b.labels.sum() == round(101 * 0.2)
    only = generate_triplets(20, seed=3, subtypes=["ghost", "cosmic_ray"])
    assert set(only.subtypes) <= {"ghost", "cosmic_ray"} and not only.labels.any()
    assert len(generate_triplets(0)) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=-1), "non-negative"),
        (dict(n=5, real_fraction=1.5), "real_fraction"),
        (dict(n=5, hard_fraction=-0.1), "hard_fraction"),
        (dict(n=5, size=10), "size"),
        (dict(n=5, subtypes=["supernova"]), "unknown subtype"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_triplets(**kwargs)


def test_generate_one_for_every_subtype():
    for subtype in REAL_SUBTYPES + BOGUS_SUBTYPES:
        image, meta = generate_one(subtype, seed=2)
        assert image.shape == (3, 63, 63) and image.dtype == np.float32
        assert meta["subtype"] == subtype
        json.dumps(meta)
    with pytest.raises(ValueError, match="unknown subtype"):
        generate_one("asteroid")


def _features(b: SynthBatch) -> np.ndarray:
    """A few hand-made features of the kind a vetter uses: shape, sharpness and sign of the central residual."""
    img = np.nan_to_num(b.images)
    diff = img[:, 2]
    noise = 1.4826 * np.median(np.abs(diff - np.median(diff, axis=(1, 2), keepdims=True)), axis=(1, 2)) + 1e-3
    c = diff[:, 27:36, 27:36] / noise[:, None, None]
    peak = c.max(axis=(1, 2))
    trough = c.min(axis=(1, 2))
    ring = diff[:, 20:43, 20:43].sum(axis=(1, 2)) / noise - c.sum(axis=(1, 2))
    ref_c = img[:, 1, 29:34, 29:34].mean(axis=(1, 2)) - np.median(img[:, 1], axis=(1, 2))
    meta = np.array([[m["elong"], m["fwhm"], m["sigmapsf"], m["nbad"]] for m in b.metadata])
    sharp = c[:, 4, 4] / (np.abs(c[:, 3:6, 3:6]).sum(axis=(1, 2)) + 1e-3)
    return np.column_stack([peak, trough, ring, ref_c, sharp, np.log1p(np.abs(ref_c)), meta])


def _holdout_auc(b: SynthBatch, labels: np.ndarray) -> float:
    x = _features(b)
    half = len(labels) // 2
    model = RandomForestClassifier(n_estimators=100, min_samples_leaf=3, random_state=0, n_jobs=1)
    model.fit(x[:half], labels[:half])
    return roc_auc_score(labels[half:], model.predict_proba(x[half:])[:, 1])


def test_classes_are_distinguishable_and_hard_fraction_makes_it_harder():
    easy = generate_triplets(1000, seed=11)
    auc_easy = _holdout_auc(easy, easy.labels)
    assert auc_easy > 0.9, auc_easy
    # The same features carry no signal about shuffled labels.
    shuffled = np.random.default_rng(0).permutation(easy.labels)
    assert abs(_holdout_auc(easy, shuffled) - 0.5) < 0.1
    hard = generate_triplets(1000, seed=11, hard_fraction=1.0)
    auc_hard = _holdout_auc(hard, hard.labels)
    # Hard subjects are separable but make at least twice as many ranking mistakes.
    assert auc_hard > 0.6 and 1 - auc_hard > 2 * (1 - auc_easy), (auc_easy, auc_hard)


def _real_cutouts():
    if not AVRO_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"ZTF test data missing at {AVRO_DIR}")
        pytest.skip(f"ZTF test data not found at {AVRO_DIR}")
    fastavro = pytest.importorskip("fastavro")
    from astropy.io import fits

    out = []
    for path in sorted(AVRO_DIR.glob("*.avro")):
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                try:
                    planes = [
                        fits.getdata(io.BytesIO(gzip.decompress(record[k]["stampData"]))).astype(float)
                        for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
                    ]
                except OSError:  # the 2016 test alert carries JPEG cutouts
                    continue
                out.append(planes)
    return out


def _robust_sigma(a):
    a = a[np.isfinite(a)]
    return 1.4826 * np.median(np.abs(a - np.median(a)))


def test_noise_and_sky_levels_resemble_real_ztf_cutouts():
    real = _real_cutouts()
    assert len(real) >= 5
    synth = generate_triplets(200, seed=5)
    for channel in range(3):
        real_sigma = np.median([_robust_sigma(planes[channel]) for planes in real])
        synth_sigma = np.median([_robust_sigma(img) for img in synth.images[:, channel]])
        assert 0.5 < synth_sigma / real_sigma < 2.0, (channel, real_sigma, synth_sigma)
    real_sky = np.median([np.nanmedian(planes[0]) for planes in real])
    synth_sky = np.median(np.nanmedian(synth.images[:, 0], axis=(1, 2)))
    assert 0.5 < synth_sky / real_sky < 2.0
