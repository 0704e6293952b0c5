"""Calibrated P(real) by temperature scaling with a bias, and bootstrap intervals for comparing classifiers.

Temperature scaling (Guo et al. 2017): one number T > 0 divides the network's logit. The loop fits
T together with a bias b (Platt scaling in the logit, P(real) = sigmoid(logit / T + b)): T > 1
softens an over-confident network, T < 1 sharpens an under-confident one, b moves the whole curve
where the network calls too much (or too little) real — which crowd-trained networks do, since
the soft labels they learn from are themselves shifted. Both are fitted after training by
minimising the negative log-likelihood of held-out labels (a bounded search over log T and b;
``fit_temperature`` is the bias-free special case). A positive scale and a shift keep the order of
the scores, so ROC AUC, the ranking and every threshold-free metric are unchanged; what changes is
that "0.9" means "real about 9 times in 10". Isotonic regression was not adopted: with a few hundred
held-out items it over-fits steps, and it ties scores (and so changes the AUC and the ranking).
bench/calibration.py compares them.

T and b are stored in the checkpoint (metadata "calibration"; checkpoints without it have T = 1,
b = 0) and set on the loaded model as ``calibration_temperature`` / ``calibration_bias``;
mlcore.score applies them, so every P(real) a scorer produces is calibrated. MC-dropout samples are
calibrated the same way, sample by sample, before their probabilities enter BALD.

``choose_calibration`` is the loop's rule: temperature and bias, unless their cross-fitted ECE is
worse than no calibration, then temperature alone, then none (a network whose scores barely vary
cannot be calibrated from a hundred items per half).

Fitting on the held-out set and measuring ECE on the same items would flatter the result, so
``cross_fit`` splits the held-out set in two stratified halves, fits on each and measures the other
(out-of-fold ECE); the (T, b) that is stored is then fitted on the whole held-out set.

Bootstrap: ``bootstrap_auc`` and ``paired_auc_difference`` resample the held-out set (with a seeded
generator, the same resamples for both models in the paired case) and give percentile intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "T_BOUNDS",
    "CrossFit",
    "logit_from_p",
    "apply_temperature",
    "fit_temperature",
    "fit_calibration",
    "choose_calibration",
    "METHODS",
    "model_bias",
    "cross_fit",
    "model_temperature",
    "set_model_temperature",
    "bootstrap_weights",
    "weighted_auc",
    "weighted_ece",
    "bootstrap_auc",
    "bootstrap_ece",
    "paired_auc_difference",
    "promotion_decision",
]

# A temperature outside this range means the logits are broken, not mis-calibrated.
T_BOUNDS = (0.05, 20.0)
_P_CLIP = 1e-7  # float32 P(real) has about 7 digits: logits beyond ±16 are not recoverable


def logit_from_p(p) -> np.ndarray:
    """The logit of probabilities (clipped away from 0 and 1, as float32 scores are)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _P_CLIP, 1 - _P_CLIP)
    return np.log(p) - np.log1p(-p)


def apply_temperature(logits, temperature: float, bias: float = 0.0) -> np.ndarray:
    """sigmoid(logits / T + b), computed without overflow."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature) + float(bias)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float, bias: float = 0.0) -> float:
    z = logits / temperature + bias
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _check(logits, y) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    t = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(z) != len(t):
        raise ValueError(f"{len(z)} logits but {len(t)} labels")
    if len(z) == 0:
        raise ValueError("no examples to calibrate on")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(t))):
        raise ValueError("logits and labels must be finite")
    return z, (t >= 0.5).astype(np.float64)


def fit_temperature(logits, y) -> float:
    """The T in T_BOUNDS minimising the held-out NLL of sigmoid(logits / T); 1.0 when the logits
    carry no information about T (all zero)."""
    from scipy.optimize import minimize_scalar

    z, t = _check(logits, y)
    if not np.any(z):
        return 1.0
    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    found = minimize_scalar(
        lambda log_t: _nll(z, t, math.exp(log_t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(found.x))


B_BOUNDS = (-10.0, 10.0)


def fit_calibration(logits, y) -> tuple[float, float]:
    """(T, b) in T_BOUNDS × B_BOUNDS minimising the held-out NLL of sigmoid(logits / T + b)."""
    from scipy.optimize import minimize

    z, t = _check(logits, y)
    if not np.any(z):
        return 1.0, 0.0
    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    start = [math.log(fit_temperature(z, t)), 0.0]
    found = minimize(
        lambda v: _nll(z, t, math.exp(v[0]), v[1]),
        start,
        method="L-BFGS-B",
        bounds=[(lo, hi), B_BOUNDS],
    )
    best = found.x if found.fun <= _nll(z, t, math.exp(start[0])) else start
    return float(math.exp(best[0])), float(best[1])


@dataclass(frozen=True)
class CrossFit:
    temperature: float  # fitted on every held-out item: the ones to store
    bias: float
    fold_params: tuple[tuple[float, float], tuple[float, float]]  # (T, b) of each half
    p_out_of_fold: np.ndarray  # each item calibrated by the (T, b) fitted on the other half


def _halves(y: np.ndarray, seed: int) -> np.ndarray:
    """A stratified split in two halves: a boolean mask of the first one."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        first[idx[: (len(idx) + 1) // 2]] = True
    return first


def cross_fit(logits, y, seed: int = 0, fit=fit_calibration) -> CrossFit:
    """Two-fold cross-fitting of the calibration (see the module docstring); ``fit`` returns (T, b)
    (``fit_calibration``) or T alone (``fit_temperature``)."""

    def params(z, t) -> tuple[float, float]:
        found = fit(z, t)
        return (float(found), 0.0) if np.isscalar(found) else (float(found[0]), float(found[1]))

    z, t = _check(logits, y)
    full = params(z, t)
    if len(z) < 4 or t.min() == t.max():
        return CrossFit(*full, (full, full), apply_temperature(z, *full))
    first = _halves(t.astype(np.int8), seed)
    on_a, on_b = params(z[first], t[first]), params(z[~first], t[~first])
    p = np.empty(len(z), dtype=np.float64)
    p[~first] = apply_temperature(z[~first], *on_a)
    p[first] = apply_temperature(z[first], *on_b)
    return CrossFit(*full, (on_a, on_b), p)


METHODS = ("none", "temperature", "temperature+bias")


def _fit_none(z, t) -> tuple[float, float]:
    return 1.0, 0.0


_FITS = {"none": _fit_none, "temperature": fit_temperature, "temperature+bias": fit_calibration}


@dataclass(frozen=True)
class Choice:
    method: str  # one of METHODS
    fitted: CrossFit  # its full-data (T, b) and out-of-fold probabilities
    ece_by_method: dict  # cross-fitted ECE of every candidate


def choose_calibration(logits, y, seed: int = 0) -> Choice:
    """Temperature and bias, unless that makes the cross-fitted ECE worse than no calibration at all;
    then temperature alone, unless that does too; then none.

    Few held-out items (a round may have 200) cannot support two parameters for a network whose
    scores barely vary, and ECE is noisy there: the check out of fold keeps a calibration that does
    not help from making the shown P(real) worse. Each candidate is only compared with no
    calibration, so the reported ECE is not the best of three noisy numbers.
    """
    from mlcore.metrics import expected_calibration_error

    z, t = _check(logits, y)
    fits = {method: cross_fit(z, t, seed, fit=_FITS[method]) for method in METHODS}
    eces = {method: expected_calibration_error(t, fits[method].p_out_of_fold) for method in METHODS}
    best = next(m for m in ("temperature+bias", "temperature", "none") if eces[m] <= eces["none"])
    return Choice(best, fits[best], eces)


def model_temperature(model) -> float:
    """The calibration temperature set on a model (1.0 for one never calibrated)."""
    value = getattr(model, "calibration_temperature", 1.0)
    return float(value) if value else 1.0


def model_bias(model) -> float:
    """The calibration bias set on a model (0.0 for one never calibrated)."""
    return float(getattr(model, "calibration_bias", 0.0) or 0.0)


def set_model_temperature(model, temperature: float, bias: float = 0.0) -> None:
    temperature, bias = float(temperature), float(bias)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"a calibration temperature must be a positive number, got {temperature!r}")
    if not math.isfinite(bias):
        raise ValueError(f"a calibration bias must be a finite number, got {bias!r}")
    model.calibration_temperature = temperature
    model.calibration_bias = bias


# ---------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) multiplicities of each item in each resample (sampling n with replacement)."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_auc(y, p, weights) -> np.ndarray:
    """ROC AUC under each row of item weights (ties count half); NaN where a row lacks a class."""
    y = (np.asarray(y, dtype=np.float64) >= 0.5).astype(np.float64)
    p = np.asarray(p, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ps)) + 1]
    ws = w[:, order]
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws * (1 - ys), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos * (neg_below + 0.5 * neg)).sum(axis=1) / total, np.nan)


def weighted_ece(y, p, weights, n_bins: int = 15) -> np.ndarray:
    """ECE (equal-width bins, as mlcore.metrics) under each row of item weights."""
    y = (np.asarray(y, dtype=np.float64) >= 0.5).astype(np.float64)
    p = np.asarray(p, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    onehot = np.zeros((len(p), n_bins))
    onehot[np.arange(len(p)), which] = 1.0
    counts = w @ onehot
    gap = np.abs(w @ (onehot * y[:, None]) - w @ (onehot * p[:, None]))  # |Σy − Σp| per bin
    return gap.sum(axis=1) / counts.sum(axis=1)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _resampled(fn, n: int, n_boot: int, seed: int, rows: int = 128) -> np.ndarray:
    """fn(weights) over seeded resamples, a block of rows at a time (a large held-out set never
    needs n_boot × n temporaries at once); the same seed gives the same resamples."""
    if n == 0:
        raise ValueError("no examples to resample")
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [fn(bootstrap_weights(n, min(rows, n_boot - i), rng)) for i in range(0, n_boot, rows)]
    )


def bootstrap_auc(y, p, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC."""
    return _interval(_resampled(lambda w: weighted_auc(y, p, w), len(np.asarray(y)), n_boot, seed), level)


def bootstrap_ece(y, p, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ECE."""
    return _interval(_resampled(lambda w: weighted_ece(y, p, w), len(np.asarray(y)), n_boot, seed), level)


def paired_auc_difference(
    y, p_new, p_old, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of AUC(new) − AUC(old), both models scored on the same resamples."""

    def diff(w):
        return weighted_auc(y, p_new, w) - weighted_auc(y, p_old, w)

    return _interval(_resampled(diff, len(np.asarray(y)), n_boot, seed), level)


# ---------------------------------------------------------------------------------------------
# Promotion


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def promotion_decision(
    y,
    p_new,
    p_old=None,
    *,
    min_heldout: int,
    tolerance: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    old_label: str = "the active model",
) -> dict:
    """Whether a candidate may replace the active model, judged on the same held-out items.

    The rule: never on fewer than ``min_heldout`` items; a first model (``p_old`` None) needs
    nothing more; otherwise a paired bootstrap gives the interval of AUC(new) − AUC(old), and the
    candidate is promoted when its lower bound is ≥ −tolerance, i.e. it is not worse than the
    active model by more than the tolerance beyond the interval (a non-inferiority test). AUC is
    the same for calibrated and raw scores (temperature scaling keeps the order). Returns plain
    values: promoted, reason (words for the model page), the numbers behind it.
    """
    y = np.asarray(y)
    n = int(len(y))
    both = 0 < int((y >= 0.5).sum()) < n
    out: dict = {"n_heldout": n, "min_heldout": int(min_heldout), "tolerance": float(tolerance)}
    out.update({"level": level, "n_boot": int(n_boot), "seed": int(seed), "rule": "paired-bootstrap"})
    if n < min_heldout:
        out["promoted"] = False
        out["reason"] = f"Not promoted: only {n} held-out items, at least {int(min_heldout)} needed."
        return out
    if not both:
        out["promoted"] = False
        out["reason"] = "Not promoted: the held-out set needs both real and bogus items."
        return out
    auc_new = float(weighted_auc(y, p_new, np.ones((1, n)))[0])
    ci_new = bootstrap_auc(y, p_new, n_boot, seed, level)
    out.update({"auc": auc_new, "auc_ci": list(ci_new)})
    head = f"AUC {auc_new:.3f} {_fmt_ci(ci_new)} on {n} held-out items"
    if p_old is None:
        out["promoted"] = True
        out["reason"] = f"Promoted: {head}; no active model to compare with."
        return out
    auc_old = float(weighted_auc(y, p_old, np.ones((1, n)))[0])
    ci_old = bootstrap_auc(y, p_old, n_boot, seed, level)
    diff_ci = paired_auc_difference(y, p_new, p_old, n_boot, seed, level)
    out.update({"previous_auc": auc_old, "previous_auc_ci": list(ci_old), "difference": auc_new - auc_old})
    out["difference_ci"] = list(diff_ci)
    versus = (
        f"{head} vs {auc_old:.3f} {_fmt_ci(ci_old)} of {old_label}; difference "
        f"{auc_new - auc_old:+.3f} [{diff_ci[0]:+.3f}, {diff_ci[1]:+.3f}]"
    )
    out["promoted"] = bool(diff_ci[0] >= -tolerance)
    if out["promoted"]:
        out["reason"] = f"Promoted: {versus}, not worse by more than {tolerance:.3f}."
    else:
        out["reason"] = f"Not promoted: {versus}, worse by more than {tolerance:.3f} at the lower bound."
    return out
