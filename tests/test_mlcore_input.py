"""One model input for two surveys (mlcore.prep): resampling to the model's pixel scale, crop and pad,
the optional uncertainty channel, and moving weights between input layouts (mlcore.models)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcore.data import TripletArrayDataset
from mlcore.models import VGG6, ModelConfig, transfer_weights
from mlcore.prep import (
    SURVEY_PIXEL_SCALES,
    InputSpec,
    TripletShapeError,
    model_stamps,
    pad_or_crop,
    pixel_scale_from_cd,
    prepare_model_input,
    prepare_subjects,
    preprocess_batch,
    rebin_weights,
    resample,
    resample_variance,
)
from mlcore.score import score


def _gaussian(n: int, centre: float, sigma: float, flux: float = 1000.0) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    g = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * sigma**2))
    return (flux * g / g.sum()).astype(np.float32)


def _centroid(image: np.ndarray) -> tuple[float, float]:
    image = np.nan_to_num(image)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    total = image.sum()
    return float((yy * image).sum() / total), float((xx * image).sum() / total)


@pytest.mark.parametrize("n", [31, 45, 61, 71, 30, 50, 64])
def test_a_point_source_at_the_centre_of_a_rubin_stamp_stays_centred_and_keeps_its_flux(n):
    stamp = _gaussian(n, (n - 1) / 2, sigma=3.0)  # 0.7″ seeing at 0.2″/px
    out = resample(stamp, 1.0 / SURVEY_PIXEL_SCALES["rubin"], size=63)
    assert out.shape == (63, 63) and out.dtype == np.float32
    cy, cx = _centroid(out)
    assert cy == pytest.approx(31.0, abs=1e-4) and cx == pytest.approx(31.0, abs=1e-4)
    assert np.nanargmax(out) == 31 * 63 + 31
    # Flux per pixel sums: the source's total flux is unchanged, its peak per pixel is much higher.
    # (rel 1e-4: the partly covered edge pixels extrapolate the faint wings of the smallest stamps)
    assert np.nansum(out) == pytest.approx(stamp.sum(), rel=1e-4)
    assert np.nanmax(out) > 10 * stamp.max()
    # Outside the stamp's footprint (n/5 output pixels) the frame is NaN padding, as braai pads.
    finite_rows = np.flatnonzero(np.isfinite(out).any(axis=1))
    assert len(finite_rows) in (round(n / 5), round(n / 5) + 1)


def test_an_aligned_5x_rebin_is_an_exact_block_sum():
    rng = np.random.default_rng(0)
    stamp = rng.normal(size=(65, 65)).astype(np.float32)  # 13 blocks of 5, centre block 30..34
    out = resample(stamp, 5.0, size=13)
    blocks = stamp.astype(np.float64).reshape(13, 5, 13, 5).sum(axis=(1, 3))
    np.testing.assert_allclose(out, blocks, rtol=1e-5, atol=1e-5)
    assert rebin_weights(65, 13, 5.0).sum(axis=0) == pytest.approx(np.ones(65))


def test_masked_pixels_are_filled_from_their_block_and_mostly_masked_blocks_are_nan():
    stamp = np.ones((65, 65), np.float32)
    stamp[0:5, 0:5] = np.nan  # a whole block: NaN out
    stamp[30:32, 30:35] = np.nan  # 10 of 25 pixels: the block keeps its mean × 25
    stamp[60:65, 60:63] = np.inf  # 15 of 25: NaN out
    out = resample(stamp, 5.0, size=13)
    assert np.isnan(out[0, 0]) and np.isnan(out[12, 12])
    assert out[6, 6] == pytest.approx(25.0)
    assert np.isfinite(out).sum() == 13 * 13 - 2


def test_ztf_stamps_are_only_padded_or_cropped_so_ztf_models_see_exactly_braai_input():
    rng = np.random.default_rng(1)
    triplet = rng.normal(100, 10, size=(3, 63, 63)).astype(np.float32)
    triplet[0, 3, 4] = np.nan
    raw = model_stamps(triplet, SURVEY_PIXEL_SCALES["ztf"], InputSpec())
    np.testing.assert_array_equal(raw, triplet)
    np.testing.assert_array_equal(prepare_model_input(raw[None]), preprocess_batch(triplet[None]))
    # Unknown pixel scale: taken to be the model's.
    np.testing.assert_array_equal(model_stamps(triplet, None), triplet)


@pytest.mark.parametrize(("n", "size"), [(63, 63), (41, 63), (75, 63), (64, 63), (63, 31), (30, 47)])
def test_crop_and_pad_give_the_model_size_with_the_centre_kept(n, size):
    image = np.arange(n * n, dtype=np.float32).reshape(n, n)
    out = pad_or_crop(image, size)
    assert out.shape == (size, size)
    assert np.isfinite(out).sum() == min(n, size) ** 2
    if n % 2 and size % 2:
        assert out[size // 2, size // 2] == image[n // 2, n // 2]
    spec = InputSpec(size=size)
    assert model_stamps(np.stack([image] * 3), 1.0, spec).shape == (3, size, size)
    assert model_stamps(np.stack([image] * 3), 0.2, spec).shape == (3, size, size)


def test_the_uncertainty_channel_comes_from_the_variance_plane_or_the_difference_noise():
    rng = np.random.default_rng(2)
    triplet = rng.normal(0, 20, size=(3, 65, 65)).astype(np.float32)
    variance = np.full((3, 65, 65), 400.0, np.float32)  # σ = 20 nJy per 0.2″ pixel
    spec = InputSpec(uncertainty=True)
    raw = model_stamps(triplet, 0.2, spec, variance)
    assert raw.shape == (4, 63, 63) and spec.channels == 4
    inside = raw[3][np.isfinite(raw[3])]
    # Sum of 25 independent pixels: σ × 5.
    np.testing.assert_allclose(inside, 100.0, rtol=1e-5)
    assert np.array_equal(np.isnan(raw[3]), np.isnan(raw[2]))
    np.testing.assert_allclose(resample_variance(variance[2], 5.0, 13), 25 * 400.0, rtol=1e-5)

    prepared = prepare_model_input(raw[None])[0]
    assert prepared.shape == (4, 63, 63) and np.all(np.isfinite(prepared))
    np.testing.assert_allclose(prepared[:3], preprocess_batch(raw[None, :3])[0])
    # Both divided by the difference's norm: the pixel S/N survives normalisation.
    finite = np.isfinite(raw[2])
    np.testing.assert_allclose(
        prepared[2][finite] / prepared[3][finite], raw[2][finite] / raw[3][finite], rtol=1e-4
    )

    # Without a variance plane (ZTF): the difference's robust noise, as a constant plane.
    ztf = model_stamps(triplet[:, 1:64, 1:64], 1.01, spec)
    sigma = ztf[3][np.isfinite(ztf[3])]
    assert np.ptp(sigma) == 0 and sigma[0] == pytest.approx(20.0, rel=0.1)
    with pytest.raises(TripletShapeError, match="variance"):
        model_stamps(triplet, 0.2, spec, variance[:, :10, :10])


def test_prepare_subjects_mixes_surveys_into_one_batch():
    rng = np.random.default_rng(3)
    ztf = rng.normal(size=(3, 63, 63)).astype(np.float32)
    rubin = rng.normal(size=(3, 47, 47)).astype(np.float32)
    batch = prepare_subjects(
        [(ztf, 1.01, None), (rubin, 0.2, np.ones((3, 47, 47)))], InputSpec(uncertainty=True)
    )
    assert batch.shape == (2, 4, 63, 63) and batch.dtype == np.float32
    assert prepare_subjects([], InputSpec(size=31)).shape == (0, 3, 31, 31)
    dataset = TripletArrayDataset(batch, preprocessed=True)
    assert dataset.get_batch([1, 0]).shape == (2, 4, 63, 63)


def test_input_spec_validation_keys_and_model_configs():
    assert InputSpec().is_default and InputSpec().key() == "s63-p1-c3"
    assert InputSpec(size=47, pixel_scale=0.5, uncertainty=True).key() == "s47-p0.5-c4"
    config = ModelConfig(input_size=47, in_channels=4, input_scale=47, pixel_scale=0.5)
    assert InputSpec.from_model_config(config) == InputSpec(47, 0.5, True)
    assert InputSpec.from_model_config(ModelConfig()) == InputSpec()
    # Checkpoints made before the pixel scale was stored: ZTF's ~1″.
    legacy = {k: v for k, v in ModelConfig().to_dict().items() if k != "pixel_scale"}
    assert ModelConfig.from_dict(legacy).pixel_scale == 1.0
    for bad in ({"size": 15}, {"pixel_scale": 0.0}, {"pixel_scale": float("nan")}):
        with pytest.raises(ValueError):
            InputSpec(**bad)
    # A CD matrix rotated by any angle still gives the pixel's side on the sky.
    theta = np.radians(33.0)
    s = 0.2 / 3600
    cd = [[-s * np.cos(theta), s * np.sin(theta)], [s * np.sin(theta), s * np.cos(theta)]]
    assert pixel_scale_from_cd(cd) == pytest.approx(0.2)


def test_a_four_channel_model_scores_and_transfer_keeps_what_the_source_computed():
    torch.manual_seed(0)
    source = VGG6(ModelConfig()).eval()
    rng = np.random.default_rng(4)
    raw = rng.normal(0, 20, size=(5, 3, 63, 63)).astype(np.float32)
    variance = np.full((3, 63, 63), 400.0, np.float32)
    four = prepare_subjects([(t, 1.0, variance) for t in raw], InputSpec(uncertainty=True))

    target, report = transfer_weights(source, ModelConfig(in_channels=4))
    assert report["adapted"] == ["conv.0.weight"] and not report["fresh"]
    with torch.inference_mode():
        before = source(torch.from_numpy(four[:, :3].copy()))
        after = target.eval()(torch.from_numpy(four))
    torch.testing.assert_close(before, after)  # the extra channel starts with zero weights
    assert score(target, TripletArrayDataset(four, preprocessed=True), features=False).p_real.shape == (5,)

    smaller, report = transfer_weights(source, ModelConfig(input_size=47, input_scale=47))
    assert "fc.weight" in report["fresh"] and "conv.0.weight" in report["copied"]
    out = smaller(torch.zeros(2, 3, 47, 47))
    assert out.shape == (2,)
    # The source is never modified.
    assert source.conv[0].weight.shape[1] == 3


# ---------------------------------------------------------------------------------------------
# Invariants, for any stamp size, factor and output size


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 71),
    factor=st.floats(1.0, 6.0),
    seed=st.integers(0, 2**16),
)
def test_resampling_conserves_the_flux_of_whatever_lies_inside(n, factor, seed):
    rng = np.random.default_rng(seed)
    border = int(np.ceil(factor)) + 1
    image = np.zeros((n + 2 * border, n + 2 * border), np.float32)
    image[border:-border, border:-border] = rng.random((n, n)).astype(np.float32)
    size = int(np.ceil(image.shape[0] / factor)) + 3
    out = resample(image, factor, size)
    assert out.shape == (size, size)
    assert np.nansum(out) == pytest.approx(float(image.sum()), rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 71),
    factor=st.floats(0.3, 6.0),
    size=st.integers(3, 80),
    seed=st.integers(0, 2**16),
)
def test_resampling_commutes_with_the_square_symmetries(n, factor, size, seed):
    image = np.random.default_rng(seed).normal(size=(n, n)).astype(np.float32)
    out = resample(image, factor, size)
    assert out.shape == (size, size) and out.dtype == np.float32
    for k, flip in [(1, False), (2, False), (0, True), (3, True)]:
        moved = np.rot90(image[:, ::-1] if flip else image, k)
        expected = np.rot90(out[:, ::-1] if flip else out, k)
        np.testing.assert_allclose(resample(moved, factor, size), expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 90),
    m=st.integers(1, 90),
    size=st.integers(1, 80),
)
def test_pad_or_crop_always_gives_the_size_and_keeps_min_pixels(n, m, size):
    image = np.ones((n, m), np.float32)
    out = pad_or_crop(image, size)
    assert out.shape == (size, size)
    assert np.isfinite(out).sum() == min(n, size) * min(m, size)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(15, 71), factor=st.sampled_from([2.0, 3.0, 5.0]), value=st.floats(0.1, 1e4))
def test_a_constant_stamp_rebins_to_a_constant_times_the_area(n, factor, value):
    out = resample(np.full((n, n), value, np.float32), factor, 7)
    # The centre pixel lies wholly on the stamp (n ≥ 15 > factor).
    assert out[3, 3] == pytest.approx(value * factor * factor, rel=1e-4)
