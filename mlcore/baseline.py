"""A scikit-learn baseline: a random forest on hand-made triplet features (after Brink et al. 2013).

Brink et al. (2013, MNRAS 435, 1047) classified PTF candidates with a random forest on ~40
features describing the difference image and its relation to the science/reference images. The
features here follow that spirit, computed from the same preprocessed triplets the CNN sees (so
arrays and lazy Datasets work alike; every cutout has unit L2 norm, hence fluxes are relative):

* masked area: fraction of exactly-zero pixels per channel (NaN → 0 in preprocessing);
* difference-image point source: peak significance (peak / robust σ), offset of the peak from the
  centre, FWHM and ellipticity from the second moments of positive flux, sharpness (peak /
  surrounding flux: cosmic rays and hot pixels are sharper than the PSF);
* subtraction artefacts: count and fraction of significantly negative pixels near the centre,
  negative/positive flux ratio (dipoles), 180° and mirror symmetry of the central stamp;
* context: science and reference peak significance, difference-to-science peak ratio, and the
  correlation of the difference stamp with the science and reference stamps.

Soft labels are used exactly: each triplet enters the forest twice, as real with weight w·p and as
bogus with weight w·(1 − p).
"""

from __future__ import annotations

import warnings

import numpy as np

from mlcore.data import as_dataset, iter_batches

__all__ = ["FEATURE_NAMES", "triplet_features", "RandomForestBaseline"]

FEATURE_NAMES = (
    "zero_frac_sci",
    "zero_frac_ref",
    "zero_frac_diff",
    "diff_peak_snr",
    "diff_peak_offset",
    "diff_fwhm",
    "diff_ellipticity",
    "diff_sharpness",
    "diff_neg_count",
    "diff_neg_frac",
    "diff_neg_pos_flux_ratio",
    "diff_symmetry_180",
    "diff_symmetry_mirror",
    "sci_peak_snr",
    "ref_peak_snr",
    "diff_to_sci_peak_ratio",
    "corr_diff_sci",
    "corr_diff_ref",
    "diff_robust_sigma",
    "diff_central_flux_frac",
)

_HALF = 7  # central 15×15 stamp
_CORE = 3  # central 7×7 where the candidate's peak must be


def _robust_sigma(images: np.ndarray) -> np.ndarray:
    """1.4826·MAD per (sample, channel) over the non-masked pixels."""
    n, c = images.shape[:2]
    flat = images.reshape(n, c, -1).astype(np.float64)
    flat = np.where(flat == 0.0, np.nan, flat)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-masked cutouts: nanmedian of nothing
        med = np.nanmedian(flat, axis=2, keepdims=True)
        mad = np.nanmedian(np.abs(flat - med), axis=2)
    sigma = 1.4826 * np.nan_to_num(mad, nan=0.0)
    return np.where(sigma > 0, sigma, 1e-6)


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(axis=1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 0.0)


def _features_of_prepared(batch: np.ndarray) -> np.ndarray:
    """(N, 3, 63, 63) preprocessed triplets → (N, len(FEATURE_NAMES)) float64."""
    x = batch.astype(np.float64)
    n, _, size, _ = x.shape
    c = size // 2
    sci, ref, diff = x[:, 0], x[:, 1], x[:, 2]
    zero_frac = (x == 0.0).reshape(n, 3, -1).mean(axis=2)
    sigma = _robust_sigma(x)
    stamp = diff[:, c - _HALF : c + _HALF + 1, c - _HALF : c + _HALF + 1]
    core = diff[:, c - _CORE : c + _CORE + 1, c - _CORE : c + _CORE + 1]
    core_flat = core.reshape(n, -1)
    peak = core_flat.max(axis=1)
    peak_pos = np.unravel_index(core_flat.argmax(axis=1), core.shape[1:])
    peak_offset = np.hypot(peak_pos[0] - _CORE, peak_pos[1] - _CORE)

    # Second moments of the positive flux in the central stamp.
    w = np.clip(stamp, 0.0, None)
    total = w.sum(axis=(1, 2))
    safe_total = np.where(total > 0, total, 1.0)
    yy, xx = np.mgrid[-_HALF : _HALF + 1, -_HALF : _HALF + 1].astype(np.float64)
    my = (w * yy).sum(axis=(1, 2)) / safe_total
    mx = (w * xx).sum(axis=(1, 2)) / safe_total
    myy = (w * yy**2).sum(axis=(1, 2)) / safe_total - my**2
    mxx = (w * xx**2).sum(axis=(1, 2)) / safe_total - mx**2
    mxy = (w * xx * yy).sum(axis=(1, 2)) / safe_total - mx * my
    trace = np.clip(mxx + myy, 1e-9, None)
    fwhm = 2.3548 * np.sqrt(trace / 2.0)
    ellipticity = np.sqrt((mxx - myy) ** 2 + 4 * mxy**2) / trace

    # Sharpness: peak pixel over the flux of the 3×3 around the centre's brightest pixel.
    ring = diff[:, c - 1 : c + 2, c - 1 : c + 2].clip(0, None).sum(axis=(1, 2))
    sharpness = np.where(ring > 0, np.clip(peak, 0, None) / np.where(ring > 0, ring, 1), 0.0)

    neg = stamp < -3.0 * sigma[:, 2, None, None]
    neg_count = neg.sum(axis=(1, 2)).astype(np.float64)
    neg_flux = -np.clip(stamp, None, 0.0).sum(axis=(1, 2))
    neg_pos_ratio = neg_flux / np.where(total > 0, total, 1e-9)

    symmetry_180 = _correlation(stamp, stamp[:, ::-1, ::-1])
    symmetry_mirror = _correlation(stamp, stamp[:, :, ::-1])

    sci_core = sci[:, c - _CORE : c + _CORE + 1, c - _CORE : c + _CORE + 1].reshape(n, -1).max(axis=1)
    ref_core = ref[:, c - _CORE : c + _CORE + 1, c - _CORE : c + _CORE + 1].reshape(n, -1).max(axis=1)
    sci_stamp = sci[:, c - _HALF : c + _HALF + 1, c - _HALF : c + _HALF + 1]
    ref_stamp = ref[:, c - _HALF : c + _HALF + 1, c - _HALF : c + _HALF + 1]
    diff_total_abs = np.abs(diff).reshape(n, -1).sum(axis=1)

    return np.column_stack(
        [
            zero_frac[:, 0],
            zero_frac[:, 1],
            zero_frac[:, 2],
            peak / sigma[:, 2],
            peak_offset,
            fwhm,
            ellipticity,
            sharpness,
            neg_count,
            neg_count / stamp[0].size,
            neg_pos_ratio,
            symmetry_180,
            symmetry_mirror,
            sci_core / sigma[:, 0],
            ref_core / sigma[:, 1],
            peak / np.where(np.abs(sci_core) > 1e-9, np.abs(sci_core), 1e-9),
            _correlation(stamp, sci_stamp),
            _correlation(stamp, ref_stamp),
            sigma[:, 2],
            np.abs(stamp).sum(axis=(1, 2)) / np.where(diff_total_abs > 0, diff_total_abs, 1.0),
        ]
    )


def triplet_features(images, batch_size: int = 2048) -> np.ndarray:
    """Hand-made features (N, len(FEATURE_NAMES)) for raw triplets (N, 3, H, W) or a mlcore.data Dataset."""
    dataset = as_dataset(images)
    parts = [_features_of_prepared(batch) for _, batch in iter_batches(dataset, batch_size)]
    if not parts:
        return np.empty((0, len(FEATURE_NAMES)))
    features = np.concatenate(parts)
    return np.nan_to_num(features, nan=0.0, posinf=1e6, neginf=-1e6)


class RandomForestBaseline:
    """RandomForest on triplet_features; same fit/predict_proba interface as mlcore.classifier.CnnClassifier."""

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 2, seed: int = 0, n_jobs: int = 1):
        from sklearn.ensemble import RandomForestClassifier

        self.forest = RandomForestClassifier(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            random_state=seed,
            n_jobs=n_jobs,
        )

    def fit(self, images, targets, sample_weights=None) -> RandomForestBaseline:
        features = triplet_features(images)
        targets = np.asarray(targets, dtype=np.float64).reshape(-1)
        if len(targets) != len(features):
            raise ValueError(f"got {len(features)} triplets but {len(targets)} labels")
        if not np.all(np.isfinite(targets)) or targets.min() < 0 or targets.max() > 1:
            raise ValueError("labels must be P(real) values in [0, 1] (no NaN)")
        weights = np.ones(len(targets)) if sample_weights is None else np.asarray(sample_weights, np.float64)
        if len(weights) != len(targets) or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise ValueError("sample weights must be finite, non-negative, one per triplet")
        # Soft label p as two weighted copies: (real, w·p) and (bogus, w·(1 − p)).
        x = np.concatenate([features, features])
        y = np.concatenate([np.ones(len(targets), np.int8), np.zeros(len(targets), np.int8)])
        w = np.concatenate([weights * targets, weights * (1 - targets)])
        keep = w > 0
        if len(np.unique(y[keep])) < 2:
            raise ValueError("need examples of both real and bogus to train")
        self.forest.fit(x[keep], y[keep], sample_weight=w[keep])
        return self

    def predict_proba(self, images) -> np.ndarray:
        features = triplet_features(images)
        if len(features) == 0:
            return np.empty(0)
        column = list(self.forest.classes_).index(1)
        return self.forest.predict_proba(features)[:, column]

    def feature_importances(self) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, self.forest.feature_importances_.tolist(), strict=True))
