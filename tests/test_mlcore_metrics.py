"""mlcore.metrics on cases with known answers, and mlcore.plots output files."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlcore.metrics import (
    confusion_matrix,
    equal_error_threshold,
    evaluate,
    expected_calibration_error,
    fpr_fnr_at_threshold,
    missed_detection_rate_at_fpr,
    roc_auc,
    roc_curve,
)
from mlcore.plots import (
    learning_curve_figure,
    learning_curve_panels,
    reliability_figure,
    roc_figure,
    save_figure,
)


def test_auc_of_perfect_reversed_and_uninformative_classifiers():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_agrees_with_scikit_learn_including_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) * 0.6 + 0.4 * y, 2)  # coarse scores: many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    curve = roc_curve(y, p)
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1 and curve.fpr[-1] == 1
    assert np.all(np.diff(curve.thresholds) < 0)


def test_fpr_fnr_and_confusion_matrix_at_a_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.4, 0.8, 0.9])
    fpr, fnr = fpr_fnr_at_threshold(y, p, 0.5)
    assert fpr == 0.25 and fnr == 0.25
    np.testing.assert_array_equal(confusion_matrix(y, p, 0.5), [[3, 1], [1, 3]])
    # Soft labels count by their side of 0.5.
    np.testing.assert_array_equal(confusion_matrix(y * 0.8 + 0.1, p, 0.5), [[3, 1], [1, 3]])


def test_equal_error_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.4, 0.8, 0.9])
    threshold, eer = equal_error_threshold(y, p)
    assert eer == pytest.approx(0.25)
    fpr, fnr = fpr_fnr_at_threshold(y, p, threshold)
    assert fpr == pytest.approx(fnr)


def test_missed_detection_rate_at_one_percent_fpr():
    # 200 bogus with scores 0.000..0.995; 100 real, 90 of them above every bogus, 10 at 0.5.
    bogus = np.arange(200) / 200
    real = np.r_[np.full(90, 1.5), np.full(10, 0.5)] / 1.5
    y = np.r_[np.zeros(200), np.ones(100)]
    p = np.r_[bogus, real]
    mdr, threshold = missed_detection_rate_at_fpr(y, p, 0.01)
    # At FPR ≤ 1% (at most 2 of 200 bogus above threshold) the 10 low reals are lost: MDR = 10%.
    assert mdr == pytest.approx(0.10)
    fpr, fnr = fpr_fnr_at_threshold(y, p, threshold)
    assert fpr <= 0.01 and fnr == pytest.approx(mdr)
    assert missed_detection_rate_at_fpr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == 0.0


def test_expected_calibration_error():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    calibrated = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(calibrated, p) < 0.01
    # Always 90% sure, right half of the time: ECE = 0.4.
    overconfident = np.r_[np.ones(500), np.zeros(500)]
    assert expected_calibration_error(overconfident, np.full(1000, 0.9)) == pytest.approx(0.4)


def test_evaluate_returns_plain_numbers_and_rejects_bad_input():
    y = np.array([0, 1, 0, 1, 1, 0])
    report = evaluate(y, [0.2, 0.9, 0.4, 0.6, 0.7, 0.1])
    assert report["roc_auc"] == 1.0 and report["confusion_matrix"] == [[3, 0], [0, 3]]
    assert report["n"] == 6 and report["n_real"] == 3 and report["fpr"] == 0.0
    assert all(isinstance(v, int | float | list) for v in report.values())
    with pytest.raises(ValueError, match="both real and bogus"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc([0, 1], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.2, np.nan])


def test_figures_are_saved_as_png_and_svg(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    figures = {
        "roc": roc_figure({"cnn": (y, p)}),
        "roc_log": roc_figure({"cnn": (y, p)}, log_fpr=True),
        "reliability": reliability_figure(y, p),
        "curve": learning_curve_figure({"random": ([100, 200], [0.9, 0.95], [0.01, 0.01])}, targets=[0.98]),
        "panels": learning_curve_panels({"truth": {"bald": ([100, 200], [0.9, 0.97], None)}}),
    }
    for name, fig in figures.items():
        paths = save_figure(fig, tmp_path / name)
        assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "svg"]
        with open(paths[0], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
        with open(paths[1]) as handle:
            assert "<svg" in handle.read()
