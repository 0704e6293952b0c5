"""Temperature scaling, bootstrap intervals and the promotion rule (mlcore.calibration), and the
temperature's way through the checkpoint into scoring."""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcore import calibration as cal
from mlcore.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlcore.data import TripletArrayDataset
from mlcore.metrics import expected_calibration_error, roc_auc
from mlcore.models import VGG6, ModelConfig
from mlcore.score import score

SEEDS = st.integers(0, 2**31 - 1)


def _calibrated_sample(seed: int, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose sigmoid is the true probability of the label (perfectly calibrated)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, spread, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    return z, y


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, spread=st.floats(1.0, 4.0))
def test_temperature_of_calibrated_logits_is_about_one(seed, spread):
    z, y = _calibrated_sample(seed, 2000, spread)
    assert abs(cal.fit_temperature(z, y) - 1.0) < 0.25


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, overconfidence=st.floats(2.5, 6.0))
def test_calibration_undoes_over_confidence(seed, overconfidence):
    z, y = _calibrated_sample(seed, 2000, 2.0)
    logits = overconfidence * z  # an over-confident network: the same order, logits too large
    fitted = cal.cross_fit(logits, y, seed=seed)
    assert fitted.temperature == pytest.approx(overconfidence, rel=0.3)
    before = expected_calibration_error(y, cal.apply_temperature(logits, 1.0))
    after = expected_calibration_error(y, fitted.p_out_of_fold)  # measured on the other half's fit
    assert after < before
    assert after < 0.06


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, scale=st.floats(0.5, 4.0), shift=st.floats(-2.0, 2.0))
def test_temperature_and_bias_undo_a_scaled_and_shifted_logit(seed, scale, shift):
    z, y = _calibrated_sample(seed, 3000, 2.0)
    temperature, bias = cal.fit_calibration(
        scale * z + shift, y
    )  # the network calls too much real (or bogus)
    assert temperature == pytest.approx(scale, rel=0.25)
    assert bias == pytest.approx(-shift / scale, abs=0.25)
    shifted = cal.cross_fit(scale * z + shift, y, seed=seed)
    alone = cal.cross_fit(scale * z + shift, y, seed=seed, fit=cal.fit_temperature)
    assert alone.bias == 0.0 and alone.fold_params[0][1] == 0.0
    assert expected_calibration_error(y, shifted.p_out_of_fold) < 0.06
    # Calibrated logits need neither: T ≈ 1, b ≈ 0.
    assert cal.fit_calibration(z, y) == pytest.approx((1.0, 0.0), abs=0.2)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, n=st.integers(8, 400), scale=st.floats(0.05, 5.0), shift=st.floats(-3.0, 3.0))
def test_the_chosen_calibration_never_makes_the_cross_fitted_ece_worse(seed, n, scale, shift):
    z, y = _calibrated_sample(seed, n, 2.0)
    choice = cal.choose_calibration(scale * z + shift, y, seed=seed)
    eces = choice.ece_by_method
    assert set(eces) == set(cal.METHODS)
    assert eces[choice.method] <= eces["none"]
    # The richest calibration that does no harm: T and b first, then T alone, then none.
    preference = ["temperature+bias", "temperature", "none"]
    assert all(eces[m] > eces["none"] for m in preference[: preference.index(choice.method)])
    assert expected_calibration_error(y, choice.fitted.p_out_of_fold) == pytest.approx(
        choice.ece_by_method[choice.method]
    )
    if choice.method == "none":
        assert (choice.fitted.temperature, choice.fitted.bias) == (1.0, 0.0)
    if choice.method == "temperature":
        assert choice.fitted.bias == 0.0


def test_a_shifted_over_confident_network_gets_temperature_and_bias():
    z, y = _calibrated_sample(11, 4000, 2.0)
    choice = cal.choose_calibration(3.0 * z + 2.0, y)
    assert choice.method == "temperature+bias"
    assert choice.ece_by_method["temperature+bias"] < choice.ece_by_method["none"] / 3


@settings(max_examples=40, deadline=None)
@given(
    # Logits on a grid and |logit / T| ≤ 30: in float64 sigmoid keeps such scores apart (beyond, it
    # rounds to 1 and ties them; fitted temperatures of real networks stay far from that).
    logits=st.lists(st.integers(-240, 240).map(lambda k: k / 8), min_size=4, max_size=60),
    temperature=st.floats(1.0, cal.T_BOUNDS[1]),
    bias=st.floats(-3.0, 3.0),
)
def test_temperature_keeps_the_order_and_the_auc(logits, temperature, bias):
    z = np.asarray(logits)
    y = (np.arange(len(z)) % 2).astype(np.int8)
    p = cal.apply_temperature(z, temperature, bias)
    assert np.all((p >= 0) & (p <= 1))
    order = np.argsort(z, kind="mergesort")
    assert np.all((np.diff(p[order]) > 0) == (np.diff(z[order]) > 0))  # strictly monotone
    assert roc_auc(y, p) == pytest.approx(roc_auc(y, cal.apply_temperature(z, 1.0)), abs=1e-12)


def test_fit_refuses_bad_input_and_has_no_opinion_on_zero_logits():
    with pytest.raises(ValueError, match="no examples"):
        cal.fit_temperature([], [])
    with pytest.raises(ValueError, match="finite"):
        cal.fit_temperature([0.0, np.nan], [0, 1])
    with pytest.raises(ValueError, match="2 logits but 3 labels"):
        cal.fit_temperature([0.0, 1.0], [0, 1, 1])
    assert cal.fit_temperature(np.zeros(10), np.arange(10) % 2) == 1.0
    # Perfectly separated logits: the NLL falls as T → 0, which stops at the bound.
    assert cal.fit_temperature([-3.0, -1.0, 1.0, 3.0], [0, 0, 1, 1]) == pytest.approx(
        cal.T_BOUNDS[0], rel=1e-3
    )


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0]), min_size=4, max_size=40),
    seed=SEEDS,
)
def test_weighted_metrics_match_the_plain_ones_and_resampling(scores, seed):
    p = np.asarray(scores)
    y = (np.random.default_rng(seed).random(len(p)) < 0.5).astype(np.int8)
    y[0], y[1] = 0, 1
    ones = np.ones((1, len(p)))
    assert cal.weighted_auc(y, p, ones)[0] == pytest.approx(roc_auc(y, p), abs=1e-12)
    assert cal.weighted_ece(y, p, ones)[0] == pytest.approx(expected_calibration_error(y, p), abs=1e-12)
    # Integer weights are the same as repeating items.
    w = np.random.default_rng(seed).integers(1, 4, len(p))
    rep_y, rep_p = np.repeat(y, w), np.repeat(p, w)
    assert cal.weighted_auc(y, p, w[None])[0] == pytest.approx(roc_auc(rep_y, rep_p), abs=1e-12)
    assert cal.weighted_ece(y, p, w[None])[0] == pytest.approx(
        expected_calibration_error(rep_y, rep_p), abs=1e-12
    )


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    z, y = _calibrated_sample(3, 300, 2.0)
    auc = roc_auc(y, z)
    lo, hi = cal.bootstrap_auc(y, z, n_boot=300, seed=1)
    assert lo < auc < hi and hi - lo < 0.2
    assert cal.bootstrap_auc(y, z, n_boot=300, seed=1) == (lo, hi)
    assert cal.bootstrap_auc(y, z, n_boot=300, seed=2) != (lo, hi)
    assert cal.paired_auc_difference(y, z, 2 * z + 1, n_boot=100) == (0.0, 0.0)  # same order, same AUC
    noisy = z + np.random.default_rng(0).normal(0, 3, len(z))
    d_lo, d_hi = cal.paired_auc_difference(y, noisy, z, n_boot=300)
    assert d_lo < roc_auc(y, noisy) - auc < d_hi and d_hi < 0  # noise makes it worse, clearly
    e_lo, e_hi = cal.bootstrap_ece(y, cal.apply_temperature(z, 1.0), n_boot=300)
    assert 0 <= e_lo < e_hi < 0.2


def test_promotion_decision_rules():
    z, y = _calibrated_sample(5, 250, 3.0)
    p = cal.apply_temperature(z, 1.0)
    short = cal.promotion_decision(y[:143], p[:143], None, min_heldout=200, tolerance=0.01, n_boot=100)
    assert not short["promoted"]
    assert short["reason"] == "Not promoted: only 143 held-out items, at least 200 needed."

    first = cal.promotion_decision(y, p, None, min_heldout=200, tolerance=0.01, n_boot=100)
    assert first["promoted"] and first["reason"].startswith(f"Promoted: AUC {roc_auc(y, p):.3f} [")
    assert first["auc_ci"][0] < first["auc"] < first["auc_ci"][1]

    same = cal.promotion_decision(y, p, p, min_heldout=200, tolerance=0.0, n_boot=100, old_label="v1")
    assert same["promoted"] and same["difference_ci"] == [0.0, 0.0] and "of v1" in same["reason"]

    worse = z + np.random.default_rng(1).normal(0, 4, len(z))
    rejected = cal.promotion_decision(y, worse, p, min_heldout=200, tolerance=0.01, n_boot=200)
    assert not rejected["promoted"] and rejected["difference_ci"][1] < 0
    assert (
        rejected["reason"].startswith("Not promoted: AUC")
        and "worse by more than 0.010" in rejected["reason"]
    )
    # A tolerance wider than the whole interval lets it through: the rule is the interval's lower bound.
    lenient = cal.promotion_decision(
        y, worse, p, min_heldout=200, tolerance=1.0 - rejected["difference_ci"][0], n_boot=200
    )
    assert lenient["promoted"]

    one_class = cal.promotion_decision(np.ones(250), p, None, min_heldout=200, tolerance=0.01, n_boot=10)
    assert not one_class["promoted"] and "both real and bogus" in one_class["reason"]


# ---------------------------------------------------------------------------------------------
# The temperature in the checkpoint and in scoring

TINY = ModelConfig(input_size=16, dense_units=16, input_scale=16.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VGG6(TINY).eval()


@pytest.fixture(scope="module")
def images():
    x = np.random.default_rng(0).normal(size=(12, 3, 16, 16)).astype(np.float32)
    return TripletArrayDataset(x / np.linalg.norm(x, axis=(2, 3), keepdims=True), preprocessed=True)


def test_checkpoint_round_trip_keeps_the_temperature_and_scoring_applies_it(model, images):
    raw = score(model, images, features=False, device="cpu")
    assert raw.temperature == 1.0
    assert np.allclose(raw.p_real, cal.apply_temperature(raw.logits, 1.0), atol=1e-6)

    buffer = io.BytesIO()
    cal.set_model_temperature(model, 2.5, -0.5)
    try:
        save_checkpoint(buffer, model)
    finally:
        del model.calibration_temperature, model.calibration_bias
    loaded = load_checkpoint(buffer.getvalue(), device="cpu")
    assert (loaded.temperature, loaded.bias) == (2.5, -0.5)
    assert loaded.metadata["calibration"] == {"method": "temperature+bias", "temperature": 2.5, "bias": -0.5}
    assert (cal.model_temperature(loaded.model), cal.model_bias(loaded.model)) == (2.5, -0.5)

    calibrated = score(loaded.model, images, features=False, device="cpu", mc_samples=3, keep_mc=True)
    assert (calibrated.temperature, calibrated.bias) == (2.5, -0.5)
    assert np.allclose(calibrated.logits, raw.logits, atol=1e-5)
    assert np.allclose(calibrated.p_real, cal.apply_temperature(raw.logits, 2.5, -0.5), atol=1e-6)
    # MC-dropout samples are calibrated the same way, each one.
    plain = score(
        loaded.model, images, features=False, device="cpu", mc_samples=3, keep_mc=True, temperature=1.0
    )
    assert np.allclose(
        cal.logit_from_p(calibrated.mc_probs), cal.logit_from_p(plain.mc_probs) / 2.5 - 0.5, atol=1e-3
    )
    assert np.allclose(plain.p_real, raw.p_real, atol=1e-6)


def test_checkpoints_without_a_temperature_load_with_one(model, images):
    buffer = io.BytesIO()
    save_checkpoint(buffer, model, metadata={"version": 1})  # as checkpoints before calibration
    loaded = load_checkpoint(buffer.getvalue(), device="cpu")
    assert (loaded.temperature, loaded.bias) == (1.0, 0.0) and "calibration" not in loaded.metadata
    assert (cal.model_temperature(loaded.model), cal.model_bias(loaded.model)) == (1.0, 0.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, "2", None, True])
def test_a_checkpoint_with_an_unusable_temperature_is_refused(model, bad):
    buffer = io.BytesIO()
    save_checkpoint(buffer, model, metadata={"calibration": {"method": "temperature", "temperature": bad}})
    with pytest.raises(CheckpointError, match="invalid calibration temperature"):
        load_checkpoint(buffer.getvalue(), device="cpu")


@pytest.mark.parametrize("bad", ["0", None, True, float("inf")])
def test_a_checkpoint_with_an_unusable_bias_is_refused(model, bad):
    buffer = io.BytesIO()
    save_checkpoint(buffer, model, metadata={"calibration": {"temperature": 1.0, "bias": bad}})
    with pytest.raises(CheckpointError, match="invalid calibration bias"):
        load_checkpoint(buffer.getvalue(), device="cpu")


def test_set_model_temperature_refuses_nonsense(model):
    for bad in (0.0, -2.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive number"):
            cal.set_model_temperature(model, bad)
    with pytest.raises(ValueError, match="finite number"):
        cal.set_model_temperature(model, 1.0, math.nan)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        score(model, np.zeros((1, 3, 63, 63), dtype=np.float32), temperature=0.0, device="cpu")
