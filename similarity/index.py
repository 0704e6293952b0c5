"""Exact nearest-neighbour search over unit embedding vectors (brute force, float16 matrix).

Scores are cosine similarities (embeddings are L2-normalised). The matrix is kept in float16
(half the memory traffic of float32: 1,000,000 × 128 is 256 MB) and multiplied with
``torch.mv``, which on x86 CPUs runs a vectorised half-precision kernel with float32
accumulation. The float16 *output* is rounded (about 5e-4 near 1.0), so the top k are made
exact by a second pass: every vector whose rounded score is within ``RERANK_MARGIN`` of the
k-th is re-scored in float32, and ties are broken by the smaller subject id. The result is
therefore exactly the brute-force top k over the stored (float16) vectors — no approximation
beyond the float16 storage of the vectors themselves (relative error ≤ 2⁻¹¹ per component).

Calibration: raw cosines of a trained embedding crowd together (most pairs of galaxy cutouts read
above 0.9), so a score alone says little. ``pair_cosine_quantiles`` samples pairs of the index once
(seeded, so the same index always gives the same numbers) and keeps quantiles of their cosines;
``EmbeddingIndex.percentile`` maps a cosine to its percentile among all pairs by interpolating
between them: 99.7 means "more similar than 99.7 % of pairs", shown as "top 0.3 % most similar pairs".

No Django here: the similarity services build indexes from ModelVersion artifacts and cache them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

# Bound on |float16-pass score − exact score|: output rounding is at most half an ulp (2.4e-4 for
# |s| < 1), rounding the query to float16 moves a score by at most ‖q − q16‖ ≤ 2⁻¹¹, and
# accumulation-order effects are ~1e-6.
RERANK_MARGIN = 2e-3
# Candidates taken from the float16 pass before checking that the margin is covered.
OVERSAMPLE = 32


# Pairs sampled to calibrate scores, and the percent levels kept: every percent up to 99, then every
# 0.01 % of the top percent, where search results live.
CALIBRATION_PAIRS = 20_000
CALIBRATION_LEVELS = np.concatenate([np.arange(0, 99, 1.0), np.linspace(99, 100, 101)])


def pair_cosine_quantiles(matrix, n_pairs: int = CALIBRATION_PAIRS, seed: int = 0) -> dict | None:
    """Quantiles of the cosine of distinct pairs of rows of `matrix` (unit rows, (N, D) array or
    tensor), at CALIBRATION_LEVELS percent: every pair when there are at most `n_pairs`, else a seeded
    random sample of them. None with fewer than 2 rows."""
    vectors = matrix.float().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix, np.float32)
    n = len(vectors)
    if n < 2:
        return None
    if n * (n - 1) // 2 <= n_pairs:
        first, second = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        first = rng.integers(0, n, n_pairs)
        second = rng.integers(0, n - 1, n_pairs)
        second = second + (second >= first)  # never a row with itself
    cosines = np.concatenate(
        [
            np.einsum("ij,ij->i", vectors[first[s : s + 4096]], vectors[second[s : s + 4096]])
            for s in range(0, len(first), 4096)
        ]
    )
    return {
        "levels": CALIBRATION_LEVELS.tolist(),
        "cosines": np.quantile(cosines.astype(np.float64), CALIBRATION_LEVELS / 100).tolist(),
        "n_pairs": int(len(cosines)),
        "seed": int(seed),
    }


def cosine_percentile(cosines, calibration: dict) -> np.ndarray:
    """Percentile (0–100) of each cosine among the calibration's pairs, interpolated between its
    quantiles; non-decreasing in the cosine. 100 beyond the most similar sampled pair."""
    xs = np.asarray(calibration["cosines"], dtype=np.float64)
    levels = np.asarray(calibration["levels"], dtype=np.float64)
    # Tied quantiles (many equal cosines): keep the highest level of each value, so xs increases.
    last = np.r_[xs[1:] != xs[:-1], True]
    xs, levels = xs[last], levels[last]
    values = np.asarray(cosines, dtype=np.float64)
    if len(xs) == 1:
        return np.where(values >= xs[0], 100.0, 0.0)
    return np.clip(np.interp(values, xs, levels, left=0.0, right=100.0), 0.0, 100.0)


@dataclass
class SearchResult:
    ids: np.ndarray  # (k,) int64 subject ids, best first
    scores: np.ndarray  # (k,) float32 cosine similarities


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class EmbeddingIndex:
    """Exact top-k cosine search over (N, D) vectors, each tagged with an integer id."""

    def __init__(self, ids, vectors, *, normalise: bool = True, calibration: dict | None = None):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"vectors must be (N, D) with N = len(ids) = {len(ids)}, got {vectors.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        if normalise:
            vectors = _normalise(vectors)
        self.ids = ids
        self.dim = int(vectors.shape[1])
        self.matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float16))
        self._row_of: dict[int, int] | None = None
        self._lock = threading.Lock()
        self._calibration = calibration

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def row_of(self) -> dict[int, int]:
        with self._lock:
            if self._row_of is None:
                self._row_of = {int(i): r for r, i in enumerate(self.ids)}
            return self._row_of

    @property
    def calibration(self) -> dict | None:
        """Quantiles of pair cosines (``pair_cosine_quantiles``): the stored ones, else computed once."""
        with self._lock:
            if self._calibration is None:
                self._calibration = pair_cosine_quantiles(self.matrix)
            return self._calibration

    def percentile(self, scores) -> np.ndarray | None:
        """Percentile of each cosine among all pairs of this index; None for an index of one vector."""
        calibration = self.calibration
        return None if calibration is None else cosine_percentile(scores, calibration)

    def vector(self, item_id: int) -> np.ndarray | None:
        row = self.row_of.get(int(item_id))
        return None if row is None else self.matrix[row].float().numpy()

    def search(self, query, k: int = 10, exclude=()) -> SearchResult:
        """The k stored vectors most similar to `query` (a (D,) vector, normalised here), best first.

        `exclude`: ids never returned (e.g. the query's own subject)."""
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        if q.shape[0] != self.dim:
            raise ValueError(f"query has dimension {q.shape[0]}, the index {self.dim}")
        n = len(self.ids)
        exclude_rows = [self.row_of[int(e)] for e in exclude if int(e) in self.row_of] if len(exclude) else []
        k = max(0, min(int(k), n - len(exclude_rows)))
        if k == 0:
            return SearchResult(np.zeros(0, np.int64), np.zeros(0, np.float32))
        q16 = torch.from_numpy(q.astype(np.float16))
        rough = torch.mv(self.matrix, q16)
        if exclude_rows:
            rough[exclude_rows] = -torch.inf
        m = min(n, k + len(exclude_rows) + OVERSAMPLE)
        top_scores, top_rows = torch.topk(rough, m, sorted=True)
        threshold = float(top_scores[k - 1]) - RERANK_MARGIN
        if m < n and float(top_scores[-1]) >= threshold:
            # Many near-ties around the k-th score: take every row inside the margin.
            top_rows = torch.nonzero(rough >= threshold).reshape(-1)
        else:
            top_rows = top_rows[top_scores >= threshold]
        rows = top_rows.numpy()
        exact = self.matrix[top_rows].float().numpy() @ q
        if exclude_rows:
            keep = ~np.isin(rows, exclude_rows)
            rows, exact = rows[keep], exact[keep]
        # Best score first; equal scores by smaller id (a stable, documented order).
        order = np.lexsort((self.ids[rows], -exact))[:k]
        return SearchResult(self.ids[rows[order]], exact[order].astype(np.float32))

    def scores_for(self, query, ids) -> np.ndarray:
        """Cosine similarity of `query` to the given ids (NaN for ids not in the index)."""
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        out = np.full(len(ids), np.nan, dtype=np.float32)
        for i, item in enumerate(ids):
            row = self.row_of.get(int(item))
            if row is not None:
                out[i] = float(self.matrix[row].float().numpy() @ q)
        return out

    def all_scores(self, query) -> np.ndarray:
        """(N,) float32 similarities of `query` to every stored vector, in row order (float16 pass)."""
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        return torch.mv(self.matrix, torch.from_numpy(q.astype(np.float16))).float().numpy()


def brute_force_top_k(ids, vectors, query, k: int, normalise_vectors: bool = True) -> SearchResult:
    """Reference search in float64 (for tests and benchmarks); normalise_vectors=False scores the
    vectors as given (e.g. an index's float16 matrix)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = _normalise(v) if normalise_vectors else v
    q = _normalise(np.asarray(query, dtype=np.float64).reshape(-1))
    scores = v @ q
    ids = np.asarray(ids, dtype=np.int64)
    order = np.lexsort((ids, -scores))[:k]
    return SearchResult(ids[order], scores[order].astype(np.float32))
