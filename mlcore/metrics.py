"""Classifier metrics for real/bogus vetting (NumPy only).

Conventions: ``y_true`` is 1 for real, 0 for bogus (soft labels are thresholded at 0.5);
``p_real`` is the predicted probability of real; a candidate is called real when p_real ≥ threshold.
FPR = bogus called real / all bogus; FNR (missed-detection rate) = real called bogus / all real.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "RocCurve",
    "roc_curve",
    "roc_auc",
    "fpr_fnr_at_threshold",
    "equal_error_threshold",
    "missed_detection_rate_at_fpr",
    "expected_calibration_error",
    "reliability_bins",
    "confusion_matrix",
    "evaluate",
    "type_confusion_matrix",
    "type_metrics",
]


class RocCurve(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray  # decreasing; point i calls real every p_real ≥ thresholds[i]


def _inputs(y_true, p_real) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(p_real, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    if len(y) == 0:
        raise ValueError("no examples")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("labels and scores must be finite (no NaN)")
    return (y >= 0.5).astype(np.int8), p


def _both_classes(y: np.ndarray):
    if y.min() == y.max():
        raise ValueError("need both real and bogus examples")


def roc_curve(y_true, p_real) -> RocCurve:
    y, p = _inputs(y_true, p_real)
    _both_classes(y)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    # One ROC point per distinct score (ties move together).
    last_of_group = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_group]
    fps = (last_of_group + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (len(y) - y.sum())]
    thresholds = np.r_[np.inf, p_sorted[last_of_group]]
    return RocCurve(fpr, tpr, thresholds)


def roc_auc(y_true, p_real) -> float:
    """Area under the ROC curve (probability a random real scores above a random bogus; ties count half)."""
    curve = roc_curve(y_true, p_real)
    return float(np.trapezoid(curve.tpr, curve.fpr))


def fpr_fnr_at_threshold(y_true, p_real, threshold: float = 0.5) -> tuple[float, float]:
    y, p = _inputs(y_true, p_real)
    _both_classes(y)
    called_real = p >= threshold
    fpr = float(np.mean(called_real[y == 0]))
    fnr = float(np.mean(~called_real[y == 1]))
    return fpr, fnr


def equal_error_threshold(y_true, p_real) -> tuple[float, float]:
    """Threshold where FPR ≈ FNR, and that error rate (mean of the two at the closest ROC point)."""
    curve = roc_curve(y_true, p_real)
    fnr = 1.0 - curve.tpr
    i = int(np.argmin(np.abs(curve.fpr - fnr)[1:])) + 1  # skip the (∞) point that calls nothing real
    return float(curve.thresholds[i]), float((curve.fpr[i] + fnr[i]) / 2)


def missed_detection_rate_at_fpr(y_true, p_real, fpr: float = 0.01) -> tuple[float, float]:
    """Brink et al. (2013) figure of merit: the lowest missed-detection rate (FNR) with FPR ≤ fpr.

    Returns (missed_detection_rate, threshold). Lower is better.
    """
    curve = roc_curve(y_true, p_real)
    allowed = np.flatnonzero(curve.fpr <= fpr + 1e-12)
    best = allowed[np.argmax(curve.tpr[allowed])]
    return float(1.0 - curve.tpr[best]), float(curve.thresholds[best])


def reliability_bins(y_true, p_real, n_bins: int = 15):
    """Equal-width bins of p_real → (bin_centres, mean predicted, observed real fraction, counts)."""
    y, p = _inputs(y_true, p_real)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / counts
        observed = np.bincount(which, weights=y, minlength=n_bins) / counts
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, mean_p, observed, counts


def expected_calibration_error(y_true, p_real, n_bins: int = 15) -> float:
    """ECE: Σ_bins (count/N)·|observed real fraction − mean p_real| over equal-width bins."""
    _, mean_p, observed, counts = reliability_bins(y_true, p_real, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(observed[filled] - mean_p[filled])))


def confusion_matrix(y_true, p_real, threshold: float = 0.5) -> np.ndarray:
    """2×2 counts, rows = true class, columns = predicted, order (bogus, real): [[TN, FP], [FN, TP]]."""
    y, p = _inputs(y_true, p_real)
    predicted = (p >= threshold).astype(np.int8)
    return np.bincount(2 * y + predicted, minlength=4).reshape(2, 2)


def evaluate(y_true, p_real, threshold: float = 0.5, n_bins: int = 15) -> dict:
    """All the numbers a model report needs, as plain floats/ints (JSON-serialisable)."""
    y, p = _inputs(y_true, p_real)
    fpr, fnr = fpr_fnr_at_threshold(y, p, threshold)
    eer_threshold, eer = equal_error_threshold(y, p)
    mdr, mdr_threshold = missed_detection_rate_at_fpr(y, p, 0.01)
    cm = confusion_matrix(y, p, threshold)
    return {
        "n": int(len(y)),
        "n_real": int(y.sum()),
        "roc_auc": roc_auc(y, p),
        "threshold": float(threshold),
        "fpr": fpr,
        "fnr": fnr,
        "accuracy": float((cm[0, 0] + cm[1, 1]) / len(y)),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "mdr_at_1pct_fpr": mdr,
        "mdr_at_1pct_fpr_threshold": mdr_threshold,
        "ece": expected_calibration_error(y, p, n_bins),
        "confusion_matrix": cm.tolist(),
    }


def type_confusion_matrix(true_types, predicted_types, n_classes: int) -> np.ndarray:
    """K×K counts of a type head: rows = true type index, columns = predicted (argmax) index."""
    t = np.asarray(true_types, dtype=np.int64).reshape(-1)
    p = np.asarray(predicted_types, dtype=np.int64).reshape(-1)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true types but {len(p)} predictions")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    for name, v in (("true types", t), ("predictions", p)):
        if len(v) and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} must be class indices in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def type_metrics(true_types, type_probs, classes) -> dict:
    """Type accuracy and the confusion matrix of type probabilities (N, K) against true type indices
    (-1 = no type: left out), as plain data: {"classes", "matrix", "n", "accuracy", "per_class_recall"}.
    Accuracy and recalls are None where there is nothing to count."""
    probs = np.asarray(type_probs, dtype=np.float64)
    t = np.asarray(true_types, dtype=np.int64).reshape(-1)
    k = len(classes)
    if probs.ndim != 2 or probs.shape != (len(t), k):
        raise ValueError(f"type_probs must have shape ({len(t)}, {k}), got {probs.shape}")
    typed = t >= 0
    predicted = probs[typed].argmax(axis=1) if typed.any() else np.empty(0, dtype=np.int64)
    matrix = type_confusion_matrix(t[typed], predicted, k)
    n = int(typed.sum())
    row_sums = matrix.sum(axis=1)
    return {
        "classes": list(classes),
        "matrix": matrix.tolist(),
        "n": n,
        "accuracy": float(np.trace(matrix) / n) if n else None,
        "per_class_recall": [float(matrix[i, i] / r) if r else None for i, r in enumerate(row_sums)],
    }
