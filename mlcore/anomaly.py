"""Anomaly ("weirdness") scores and the gem ranking: which subjects a scientist should look at first.

Three unsupervised detectors, each returning a percentile rank in [0, 1] (1 = the weirdest row):

* ``isolation_forest_scores`` — scikit-learn's isolation forest (Liu et al. 2008); weirdness is the
  percentile rank of ``-score_samples`` (short isolation paths);
* ``knn_distance_scores`` — mean Euclidean distance to the k nearest neighbours among a reference
  sample (Ramaswamy et al. 2000 style), on standardised features;
* ``urf_weirdness`` — the unsupervised random forest of Baron & Poznanski (2017): a forest learns to
  tell the real rows from synthetic rows drawn independently from each feature's marginal
  distribution, so it splits only where features are correlated, i.e. where the data have structure.
  Two real rows are similar in the fraction of trees in which they land in the same leaf (a leaf
  the forest labels "real"); a row's weirdness is one minus its mean similarity to the reference rows
  (the fit sample: the count of reference rows per leaf makes that one lookup per tree, not n × m).

``weirdness`` runs any of them together, plus ``"combined"`` (the mean of their percentile ranks).
Each detector is fitted on a bounded random sample of rows (``max_fit``, 20,000 by default) and then
scores every row in chunks, so a million-row feature matrix (even a memory-mapped ``.npy``) is scored
in bounded memory: what a chunk holds is ``chunk`` rows × the reference sample, never n × n.

``gem_ranking`` turns weirdness, volunteer flags and vote disagreement into one gem score; once a
scientist has rated some candidates (0–5), a relevance regressor trained on those ratings re-weights it
as Astronomaly does (Lochner & Bassett 2021): where the regressor is trusted (close to rated rows) its
predicted relevance decides, far from any rating the weirdness still does.

Properties every score here has (tested with hypothesis in tests/test_mlcore_anomaly.py):
deterministic for a seed; invariant to row order (permuting the rows permutes the scores), because
the fit sample is drawn from a canonical, content-defined order of the rows; independent of
``chunk``; identical rows get identical scores. Pure numpy/scipy/scikit-learn — no torch, no Django.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "METHODS",
    "DEFAULT_MAX_FIT",
    "GEM_WEIGHTS",
    "percentile_rank",
    "isolation_forest_scores",
    "knn_distance_scores",
    "urf_weirdness",
    "weirdness",
    "flag_component",
    "gem_ranking",
]

METHODS = ("iforest", "knn", "urf")
DEFAULT_MAX_FIT = 20_000
# Fully grown trees on real + synthetic rows cost O(n log n) per tree: the unsupervised forest learns
# from at most this many real rows (a seeded subset of the fit sample). Its similarity is still taken
# against the whole fit sample: counting reference rows per leaf costs one pass, whatever their number.
URF_MAX_TRAIN = 5_000
# Half the synthetic rows come from the per-feature marginals (Baron & Poznanski), half uniformly from
# the data's bounding box padded by 10 % (Breiman's other synthetic class): with marginals alone, a row
# that is extreme in every feature along the data's correlation lands in "real" leaves next to the
# most extreme normal rows and looks ordinary (a far outlier in a 3-D correlated blob ranked ~125th of
# 150); the uniform rows make such empty regions "synthetic", so it ranks first.
URF_UNIFORM_SHARE = 0.5
URF_MIN_LEAF = 1
DEFAULT_CHUNK = 50_000

# Blend without ratings (weirdness, flags, disagreement). Chosen on a tuning seed of bench/gems.py that
# is not one of its evaluation seeds (docs/benchmarks.md, "Rare gems").
GEM_WEIGHTS = {"weirdness": 0.4, "flags": 0.4, "disagreement": 0.2}
# A skill-weighted flag total of FLAG_HALF gives a flag component of 0.5 (it saturates towards 1).
FLAG_HALF = 1.0
# Relevance re-weighting once ratings exist: trust in the regressor decays as exp(-d / RELEVANCE_ALPHA)
# with d the distance to the nearest rated row in units of the RMS distance between two rows, and the
# trusted relevance closes RELEVANCE_BOOST of the gap between the score and 1.
RELEVANCE_ALPHA = 0.5
RELEVANCE_BOOST = 1.0
MAX_RATING = 5.0


# -- helpers -------------------------------------------------------------------------------------------


def _as_features(features) -> np.ndarray:
    """Validate a 2-D feature matrix (without copying a memory map)."""
    x = np.asarray(features) if not isinstance(features, np.ndarray) else features
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n_rows, n_features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must have at least one row and one column, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"features must be real numbers, got dtype {x.dtype}")
    return x


def _chunks(n: int, chunk: int):
    chunk = max(1, int(chunk))
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def _clean(block: np.ndarray) -> np.ndarray:
    """float64 copy of a chunk; refuses NaN/inf, and turns -0.0 into 0.0 so equal rows compare equal byte-wise."""
    b = np.asarray(block, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        raise ValueError("features contain NaN or infinite values")
    return b + 0.0


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among all, scaled to [0, 1] (0 = smallest, 1 = largest; ties share the mean rank).

    A single value, or all values equal, gives 0.5: nothing stands out.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return v
    if n == 1:
        return np.full(1, 0.5)
    return (rankdata(v, method="average") - 1.0) / (n - 1.0)


def _canonical_order(x: np.ndarray, chunk: int) -> np.ndarray:
    """An order of the rows defined by their content only, so that the fit sample does not depend on
    the order the caller happened to pass the rows in.

    Sort key: a fixed random projection of each row (one chunked pass); a run of equal keys (equal
    rows, or a tie of the projection, e.g. on integer data) is ordered lexicographically by the rows'
    values. Equal rows may stay in input order: they are interchangeable.
    """
    n, d = x.shape
    w = np.random.default_rng(0x5EED).standard_normal(d)
    key = np.empty(n)
    for a, b in _chunks(n, chunk):
        # An elementwise product summed per row, not a BLAS product: its rounding then depends on the
        # row alone, never on which chunk the row is in.
        key[a:b] = (_clean(x[a:b]) * w).sum(axis=1)
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    if same.any():
        edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) + 1, strict=True):
            idx = np.sort(order[s:e])
            rows = _clean(x[idx])
            order[s:e] = idx[np.lexsort(rows.T[::-1])]
    return order


def _fit_sample(x: np.ndarray, max_fit: int, seed: int, chunk: int) -> np.ndarray:
    """The rows the detectors are fitted on: all rows, or ``max_fit`` of them drawn with ``seed``
    from the canonical order; returned in canonical order (float64)."""
    n = x.shape[0]
    order = _canonical_order(x, chunk)
    if n > max_fit:
        order = order[np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))]
    return _clean(x[order])


def _standardiser(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = sample.mean(axis=0)
    sd = sample.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return mu, sd


def _row_keys(rows: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in np.ascontiguousarray(rows, dtype=np.float64)]


# -- detectors -----------------------------------------------------------------------------------------
# Each has fit(sample) and raw(chunk) -> raw weirdness (higher = weirder) that depends on the row alone,
# never on the other rows of its chunk; the percentile rank over all rows is taken at the end.


class _IsolationForest:
    def __init__(self, seed: int):
        self.seed = seed

    def fit(self, sample: np.ndarray) -> _IsolationForest:
        from sklearn.ensemble import IsolationForest

        self.mu, self.sd = _standardiser(sample)
        self.model = IsolationForest(n_estimators=100, random_state=self.seed, n_jobs=1)
        self.model.fit((sample - self.mu) / self.sd)
        return self

    def raw(self, block: np.ndarray) -> np.ndarray:
        return -self.model.score_samples((block - self.mu) / self.sd)


class _KnnDistance:
    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)

    def fit(self, sample: np.ndarray) -> _KnnDistance:
        self.mu, self.sd = _standardiser(sample)
        self.ref = (sample - self.mu) / self.sd
        self.ref_sq = (self.ref**2).sum(axis=1)
        return self

    def raw(self, block: np.ndarray) -> np.ndarray:
        q = (block - self.mu) / self.sd
        m = self.ref.shape[0]
        # One more than k: a row that is itself among the reference rows drops its zero distance.
        kk = min(self.k + 1, m)
        out = np.empty(q.shape[0])
        # Sub-blocks bound the (rows × reference) distance matrix to ~32 MB.
        step = max(1, (4_000_000 // max(m, 1)))
        for a, b in _chunks(q.shape[0], step):
            qb = q[a:b]
            # Candidates by the fast (BLAS) formula, whose rounding depends on the block; the distances
            # used are then recomputed exactly, row by row, so the score never depends on chunking.
            d2 = (qb**2).sum(axis=1)[:, None] + self.ref_sq[None, :] - 2.0 * (qb @ self.ref.T)
            extra = min(m, kk + 8)
            cand = (
                np.argpartition(d2, extra - 1, axis=1)[:, :extra]
                if extra < m
                else np.tile(np.arange(m), (b - a, 1))
            )
            diff = qb[:, None, :] - self.ref[cand]
            dist = np.sort(np.sqrt((diff**2).sum(axis=2)), axis=1)
            start = ((dist[:, 0] == 0.0) & (m > 1)).astype(np.int64)
            count = np.minimum(self.k, dist.shape[1] - start)
            cs = np.concatenate([np.zeros((b - a, 1)), np.cumsum(dist, axis=1)], axis=1)
            rows = np.arange(b - a)
            out[a:b] = (cs[rows, start + count] - cs[rows, start]) / count
        return out


class _UnsupervisedForest:
    def __init__(self, seed: int, n_trees: int):
        if int(n_trees) < 1:
            raise ValueError(f"n_trees must be at least 1, got {n_trees}")
        self.seed = seed
        self.n_trees = int(n_trees)

    def fit(self, sample: np.ndarray) -> _UnsupervisedForest:
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(self.seed)
        ref = sample
        if sample.shape[0] > URF_MAX_TRAIN:
            sample = sample[np.sort(rng.choice(sample.shape[0], size=URF_MAX_TRAIN, replace=False))]
        n, d = sample.shape
        # Synthetic rows: each feature drawn independently from its own marginal (a column
        # permutation per feature), which keeps the marginals and destroys the correlations; then a
        # share of them replaced by uniform draws over the padded bounding box (see URF_UNIFORM_SHARE).
        synthetic = np.empty_like(sample)
        for j in range(d):
            synthetic[:, j] = sample[rng.permutation(n), j]
        n_uniform = int(round(URF_UNIFORM_SHARE * n))
        if n_uniform:
            lo, hi = sample.min(axis=0), sample.max(axis=0)
            pad = 0.1 * (hi - lo)
            synthetic[:n_uniform] = rng.uniform(lo - pad, hi + pad, size=(n_uniform, d))
        x = np.vstack([sample, synthetic])
        y = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(n, dtype=np.int8)])
        self.forest = RandomForestClassifier(
            n_estimators=self.n_trees,
            max_features="sqrt",
            min_samples_leaf=URF_MIN_LEAF,
            random_state=int(rng.integers(2**31 - 1)),
            n_jobs=1,
        )
        self.forest.fit(x, y)
        self.m = ref.shape[0]
        self.ref_keys = set(_row_keys(ref))
        ref_leaves = self.forest.apply(ref)
        # Per tree: how many reference rows fall in each node, kept only for leaves the tree calls
        # "real" (Baron & Poznanski count a shared leaf only when it is a real-object leaf).
        self.counts = []
        for t, tree in enumerate(self.forest.estimators_):
            value = tree.tree_.value[:, 0, :]
            # Column 1 is label 1 (real): the forest encodes the labels 0, 1 in sorted order.
            is_real = value[:, 1] > value.sum(axis=1) / 2.0
            c = np.bincount(ref_leaves[:, t], minlength=tree.tree_.node_count).astype(np.float64)
            self.counts.append(np.where(is_real, c, 0.0))
        return self

    def raw(self, block: np.ndarray) -> np.ndarray:
        leaves = self.forest.apply(block)
        shared = np.zeros(block.shape[0])
        in_ref = np.fromiter((k in self.ref_keys for k in _row_keys(block)), dtype=bool, count=block.shape[0])
        for t in range(self.n_trees):
            c = self.counts[t][leaves[:, t]]
            # A row equal to a reference row shares every leaf with it: that is itself, not a neighbour.
            shared += np.where(in_ref & (c > 0), c - 1.0, c)
        denom = np.where(in_ref, self.m - 1, self.m).astype(np.float64)
        denom = np.where(denom > 0, denom, 1.0)
        similarity = shared / (self.n_trees * denom)
        return 1.0 - similarity


def _make(method: str, seed: int, k: int, n_trees: int):
    if method == "iforest":
        return _IsolationForest(seed)
    if method == "knn":
        return _KnnDistance(k)
    if method == "urf":
        return _UnsupervisedForest(seed, n_trees)
    raise ValueError(f"unknown weirdness method {method!r}; expected one of {', '.join(METHODS)}")


# -- public API ------------------------------------------------------------------------------------------


def weirdness(
    features: np.ndarray,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    *,
    k: int = 10,
    n_trees: int = 100,
    max_fit: int = DEFAULT_MAX_FIT,
) -> dict[str, np.ndarray]:
    """Weirdness of every row by each of ``methods``, plus ``"combined"``.

    Args:
        features: (n, d) real numbers (a memory-mapped array is read chunk by chunk). NaN/inf refused.
        methods: any of ``"iforest"``, ``"knn"``, ``"urf"`` (at least one).
        seed: fixes the fit sample and the forests; same seed and rows → same scores.
        chunk: rows scored at a time (memory only; the scores do not depend on it).
        k: neighbours for ``"knn"``.
        n_trees: trees for ``"urf"``.
        max_fit: at most this many rows (a seeded random sample) are used to fit each detector.

    Returns:
        ``{method: (n,) float64 in [0, 1]}`` — percentile ranks, 1 = weirdest — and ``"combined"``,
        the mean of the methods' ranks (also in [0, 1]).

    Raises:
        ValueError: bad shape, non-finite values, unknown method, k or n_trees < 1.
    """
    x = _as_features(features)
    methods = tuple(methods)
    if not methods:
        raise ValueError("at least one weirdness method is needed")
    detectors = {m: _make(m, seed, k, n_trees) for m in methods}
    if int(max_fit) < 1:
        raise ValueError(f"max_fit must be at least 1, got {max_fit}")
    sample = _fit_sample(x, int(max_fit), seed, chunk)
    for det in detectors.values():
        det.fit(sample)
    n = x.shape[0]
    raw = {m: np.empty(n) for m in methods}
    for a, b in _chunks(n, chunk):
        block = _clean(x[a:b])
        for m, det in detectors.items():
            raw[m][a:b] = det.raw(block)
    out = {m: percentile_rank(raw[m]) for m in methods}
    out["combined"] = np.mean([out[m] for m in methods], axis=0)
    return out


def isolation_forest_scores(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Isolation-forest weirdness: percentile rank (0–1, 1 = weirdest) of ``-score_samples``."""
    return weirdness(features, methods=("iforest",), seed=seed)["iforest"]


def knn_distance_scores(features: np.ndarray, k: int = 10) -> np.ndarray:
    """kNN weirdness: percentile rank (0–1) of the mean distance to the k nearest reference rows
    (standardised features; a row does not count itself)."""
    return weirdness(features, methods=("knn",), k=k)["knn"]


def urf_weirdness(features: np.ndarray, seed: int = 0, n_trees: int = 100) -> np.ndarray:
    """Unsupervised-random-forest weirdness (Baron & Poznanski 2017) as a percentile rank (0–1):
    one minus the mean fraction of trees in which the row shares a "real" leaf with each reference row
    (the fit sample; the forest itself learns from at most ``URF_MAX_TRAIN`` of them)."""
    return weirdness(features, methods=("urf",), seed=seed, n_trees=n_trees)["urf"]


def flag_component(flag_score: np.ndarray) -> np.ndarray:
    """Map a (skill-weighted) flag total ≥ 0 to [0, 1): f / (f + FLAG_HALF); no flags → 0."""
    f = np.clip(np.nan_to_num(np.asarray(flag_score, dtype=np.float64), nan=0.0, posinf=1e12), 0.0, None)
    return f / (f + FLAG_HALF)


def _vector(name: str, values, n: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {np.shape(values)}")
    return v


def gem_ranking(
    weirdness: np.ndarray,
    flag_score: np.ndarray,
    disagreement: np.ndarray,
    features: np.ndarray,
    rated_idx: np.ndarray,
    ratings: np.ndarray,
    seed: int = 0,
    *,
    weights: dict[str, float] | None = None,
    alpha: float = RELEVANCE_ALPHA,
    boost: float = RELEVANCE_BOOST,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One gem score per row (higher = show the scientist sooner) and its components.

    Args:
        weirdness: (n,) in [0, 1], e.g. ``weirdness(...)["combined"]``.
        flag_score: (n,) ≥ 0, volunteer "this is interesting" flags, already skill-weighted by the
            caller; mapped to [0, 1) by ``flag_component``.
        disagreement: (n,) in [0, 1], e.g. the normalised entropy of the votes.
        features: (n, d) the rows' features (the relevance regressor's input).
        rated_idx: positions of the rows a scientist has rated (may be empty).
        ratings: their ratings, 0–5 (5 = a gem).
        seed: fixes the relevance regressor.
        weights: override ``GEM_WEIGHTS`` (keys weirdness, flags, disagreement; normalised to sum 1).
        alpha: how far (in RMS row-to-row distances) the trust in the relevance reaches.
        boost: share of the gap to 1 that a trusted relevance of 1 closes, in [0, 1].

    Without ratings the score is the fixed blend
    ``base = w_w·weirdness + w_f·flags + w_d·disagreement`` (in [0, 1]) and the relevance component is 0.

    With ratings, a random forest regressor learns rating/5 from the rated rows' (standardised)
    features and predicts a relevance r for every row. The regressor is trusted near rated rows:
    ``t = exp(−d / alpha)``, d the distance to the nearest rated row in units of the RMS distance
    between two rows. As in Astronomaly (Lochner & Bassett 2021, "trained relevance × anomaly") the
    trained score is the anomaly score scaled by the predicted relevance where it is trusted,
    ``trained = base · ((1 − t) + t · (0.1 + 0.85 r))``: near a rated-boring row it falls to a tenth,
    far from every rating it stays ``base``. Because a product can only lower a score,
    rated-interesting regions are also lifted: the score becomes
    ``trained + (1 − trained) · boost · t · max(0, 2r − 1)`` (boost in [0, 1]), which stays in [0, 1]
    and leaves rows far from every rating at ``base``. Rated rows keep their own rating as relevance
    (the caller normally leaves them out of the review queue anyway).

    Returns:
        ``(score, {"weirdness", "flags", "disagreement", "relevance"})``, all (n,) float64 in [0, 1].
    """
    w = _vector("weirdness", weirdness, len(np.ravel(weirdness)))
    n = w.size
    if n == 0:
        raise ValueError("weirdness is empty")
    w = np.clip(np.nan_to_num(w, nan=0.0), 0.0, 1.0)
    flags = flag_component(_vector("flag_score", flag_score, n))
    dis = np.clip(np.nan_to_num(_vector("disagreement", disagreement, n), nan=0.0), 0.0, 1.0)
    x = _as_features(features)
    if x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows, weirdness {n}")
    rated_idx = np.asarray(rated_idx, dtype=np.int64).ravel()
    r_vals = np.asarray(ratings, dtype=np.float64).ravel()
    if rated_idx.shape != r_vals.shape:
        raise ValueError("rated_idx and ratings must have the same length")
    if rated_idx.size and (rated_idx.min() < 0 or rated_idx.max() >= n):
        raise ValueError("rated_idx out of range")
    if r_vals.size and not np.all(np.isfinite(r_vals)):
        raise ValueError("ratings must be finite")
    r_vals = np.clip(r_vals, 0.0, MAX_RATING)

    wt = dict(GEM_WEIGHTS if weights is None else weights)
    total = sum(max(0.0, float(wt.get(k, 0.0))) for k in ("weirdness", "flags", "disagreement"))
    if total <= 0:
        raise ValueError("gem weights must not all be zero")
    ww, wf, wd = (max(0.0, float(wt.get(k, 0.0))) / total for k in ("weirdness", "flags", "disagreement"))
    base = np.clip(ww * w + wf * flags + wd * dis, 0.0, 1.0)
    components = {"weirdness": w, "flags": flags, "disagreement": dis, "relevance": np.zeros(n)}
    if rated_idx.size == 0:
        return base, components

    # Average duplicate ratings of one row (a row rated twice counts once, with its mean rating).
    uniq, inv = np.unique(rated_idx, return_inverse=True)
    mean_r = np.bincount(inv, weights=r_vals) / np.bincount(inv)
    target = mean_r / MAX_RATING

    # Standardise with the mean and std of all rows, accumulated chunk by chunk (no n × d copy).
    total_sum = np.zeros(x.shape[1])
    total_sq = np.zeros(x.shape[1])
    for a, b in _chunks(n, DEFAULT_CHUNK):
        block = _clean(x[a:b])
        total_sum += block.sum(axis=0)
        total_sq += (block**2).sum(axis=0)
    mu = total_sum / n
    sd = np.sqrt(np.maximum(total_sq / n - mu**2, 0.0))
    varying = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
    sd = np.where(varying, sd, 1.0)
    train = (_clean(x[uniq]) - mu) / sd
    # Distances in units of the RMS distance between two standardised rows, sqrt(2 · features that vary).
    scale = float(np.sqrt(2.0 * max(int(varying.sum()), 1)))
    alpha = max(float(alpha), 1e-6)
    boost = min(max(float(boost), 0.0), 1.0)

    reg = None
    if np.ptp(target) > 0:
        from sklearn.ensemble import RandomForestRegressor

        reg = RandomForestRegressor(n_estimators=50, min_samples_leaf=1, random_state=int(seed), n_jobs=1)
        reg.fit(train, target)
    relevance = np.empty(n)
    dist = np.empty(n)
    t_sq = (train**2).sum(axis=1)
    step = max(1, min(DEFAULT_CHUNK, 4_000_000 // train.shape[0]))
    for a, b in _chunks(n, step):
        q = (_clean(x[a:b]) - mu) / sd
        relevance[a:b] = reg.predict(q) if reg is not None else target[0]
        d2 = (q**2).sum(axis=1)[:, None] + t_sq[None, :] - 2.0 * (q @ train.T)
        dist[a:b] = np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
    relevance[uniq] = target
    dist[uniq] = 0.0

    # Trust in the predicted relevance: 1 on a rated row, decaying with the distance to the nearest one.
    trust = np.exp(-(dist / scale) / alpha)
    # Astronomaly's idea (Lochner & Bassett 2021): where the regressor is trusted the anomaly score is
    # scaled by the predicted relevance (0.1 + 0.85 r, their f_u), elsewhere it is left alone. Their
    # trust curve, tanh(exp(d/alpha) − 1 + artanh(f_u)), barely penalises rows a little away from a
    # rating; the linear mix below makes the same two limits but keeps the penalty across a region.
    f_u = 0.1 + 0.85 * relevance
    trained = base * ((1.0 - trust) + trust * f_u)
    # The lift closes a share of the gap to 1 (so the score stays in [0, 1] and far rows are untouched),
    # only for relevance above the middle of the scale: a region rated 0–2 must never rise.
    lift = np.clip(2.0 * relevance - 1.0, 0.0, 1.0)
    score = trained + (1.0 - trained) * boost * trust * lift
    components["relevance"] = relevance
    return np.clip(score, 0.0, 1.0), components
