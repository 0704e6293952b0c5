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

Approximate search at scale: from ``APPROX_MIN_N`` vectors on (below it exact search is as fast —
bench/search.py measures the crossover) an attached ``ApproximateIndex`` (faiss IVF with 8-bit scalar
quantisation, inner product over unit vectors) proposes ``RERANK_CANDIDATES`` rows, and those are
re-scored exactly in float32 against the stored float16 matrix, ties by the smaller id as above. So
every returned score is exact; only the choice of candidates is approximate (recall@15 is measured
in bench/search.py). ``EmbeddingIndex.add`` appends new vectors to the matrix and to the IVF lists
without retraining the centroids, until the index has grown ``RETRAIN_GROWTH``-fold since they were
trained.

No Django here: the similarity services build indexes from ModelVersion artifacts and cache them.
"""

from __future__ import annotations

import math
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


# Approximate search (faiss IVF + exact re-rank).
# Below this many vectors exact search is used even when an IVF is attached: it never misses, and at
# 5,000 it was as fast as the IVF, while from 20,000 on it was ~10 ms at the median against ~0.2 ms
# (bench/search.py measures the crossover on a trained embedding; docs/benchmarks.md).
APPROX_MIN_N = 20_000
# IVF candidates re-scored exactly; the top k of them are returned.
RERANK_CANDIDATES = 128
# Adds append to the trained IVF lists; once the index holds this many times the vectors its centroids
# were trained on, they no longer describe the data and the IVF is retrained.
RETRAIN_GROWTH = 4.0
# k-means training points per list (faiss warns below 39) and its iterations: a sample, not all N,
# keeps the build at 1,000,000 × 128 well under two minutes on 2 cores.
TRAIN_POINTS_PER_LIST = 40
KMEANS_ITERATIONS = 10
ADD_CHUNK = 100_000


def ivf_nlist(n: int) -> int:
    """Lists for n vectors: about 4·√n, and at least 39 training points per list."""
    return max(1, min(int(round(4 * math.sqrt(max(n, 1)))), n // 39))


def ivf_nprobe(nlist: int) -> int:
    """Lists scanned per query. On the galaxy embeddings of bench/search.py recall against exact search
    is already 1.000 at 16 of 4,000 lists; twice that at 1,000,000 (31) leaves a margin."""
    return max(1, min(nlist, max(16, nlist // 128)))


class ApproximateIndex:
    """A faiss IVF (8-bit scalar quantiser, inner product) whose labels are row numbers of the
    EmbeddingIndex matrix; it only proposes candidates, the EmbeddingIndex scores them exactly."""

    def __init__(self, faiss_index, trained_size: int):
        self.index = faiss_index
        self.trained_size = int(trained_size)
        # faiss forbids adding while a search runs; searches take well under a millisecond.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = max(1, min(int(value), self.nlist))

    @property
    def needs_retrain(self) -> bool:
        return len(self) > RETRAIN_GROWTH * max(1, self.trained_size)

    @classmethod
    def build(cls, matrix, *, nlist: int | None = None, nprobe: int | None = None, seed: int = 0):
        """Train on a seeded sample of the (N, D) unit rows and add them all (rows 0..N-1)."""
        import faiss

        n, dim = int(matrix.shape[0]), int(matrix.shape[1])
        if n < 1:
            raise ValueError("an IVF needs at least one vector")
        nlist = max(1, min(int(nlist or ivf_nlist(n)), n))
        quantiser = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantiser, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = KMEANS_ITERATIONS
        index.cp.seed = int(seed)
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        n_train = min(n, TRAIN_POINTS_PER_LIST * nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
        index.train(_rows_f32(matrix, rows))
        approx = cls(index, trained_size=n)
        approx.nprobe = nprobe or ivf_nprobe(nlist)
        for start in range(0, n, ADD_CHUNK):
            index.add(_rows_f32(matrix, slice(start, min(n, start + ADD_CHUNK))))
        return approx

    def add(self, vectors: np.ndarray) -> None:
        """Append unit rows (they get the next row numbers); the centroids stay as trained."""
        with self._lock:
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def candidates(self, query: np.ndarray, m: int) -> np.ndarray:
        """Row numbers of up to m approximate nearest neighbours of a unit query."""
        import faiss

        with self._lock:
            # One query scans a few lists: OpenMP threads cost more than they save, and their spinning
            # fights torch's own thread pool on a busy machine (p95 went from 0.3 to 15 ms). This sets
            # the calling thread's count only, restored after.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                _, rows = self.index.search(
                    np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), int(m)
                )
            finally:
                faiss.omp_set_num_threads(threads)
        rows = rows[0]
        return rows[rows >= 0]

    def to_bytes(self) -> bytes:
        import faiss

        with self._lock:
            return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, trained_size: int | None = None, nprobe: int | None = None):
        import faiss

        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if not isinstance(index, faiss.IndexIVF):
            raise ValueError("not an IVF index")
        approx = cls(index, trained_size=trained_size or index.ntotal)
        if nprobe:
            approx.nprobe = nprobe
        return approx


def _rows_f32(matrix, rows) -> np.ndarray:
    if isinstance(matrix, torch.Tensor) and isinstance(rows, np.ndarray):
        rows = torch.from_numpy(rows)
    block = matrix[rows]
    if isinstance(block, torch.Tensor):
        block = block.float().numpy()
    return np.ascontiguousarray(block, dtype=np.float32)


class EmbeddingIndex:
    """Top-k cosine search over (N, D) vectors, each tagged with an integer id: exact, or with an
    attached ApproximateIndex (from `approx_min` vectors on) IVF candidates re-ranked exactly."""

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
        self.ivf: ApproximateIndex | None = None
        # Rows given at construction (the stored vectors); `add` appends after them.
        self.n_initial = len(ids)
        self.approx_min = APPROX_MIN_N
        # Set once an IVF is attached (web processes load it in the background; tests wait on it).
        self.ivf_ready = threading.Event()
        self.ivf_load_started = False  # set by whoever loads a stored IVF for it (similarity.services)

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

    @property
    def uses_approximate(self) -> bool:
        return self.ivf is not None and len(self.ids) >= self.approx_min

    def build_ivf(self, *, initial_only: bool = False, **options) -> ApproximateIndex:
        """Build and attach an IVF over the vectors (ApproximateIndex.build options). `initial_only`:
        over the rows given at construction only (what is stored), the added ones appended after."""
        matrix = self.matrix[: self.n_initial] if initial_only else self.matrix
        ivf = ApproximateIndex.build(matrix, **options)
        self.attach_ivf(ivf)
        return ivf

    def attach_ivf(self, ivf: ApproximateIndex) -> None:
        """Use `ivf` for candidates; its labels are this index's first rows, and rows added since it
        was built (e.g. while it loaded) are appended to it here."""
        with self._lock:
            if len(ivf) > len(self.ids):
                raise ValueError(f"the IVF holds {len(ivf)} vectors, the index {len(self.ids)}")
            if len(ivf) < len(self.ids):
                ivf.add(self.matrix[len(ivf) :].float().numpy())
            self.ivf = ivf
        self.ivf_ready.set()

    def add(self, ids, vectors, *, normalise: bool = True) -> int:
        """Append vectors of new ids (ids already present are skipped) to the matrix and the IVF,
        without retraining its centroids unless the index grew RETRAIN_GROWTH-fold since they were
        trained. Returns how many were added."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        row_of = self.row_of
        keep = np.zeros(len(ids), dtype=bool)
        keep[np.unique(ids, return_index=True)[1]] = True  # the first of repeated ids
        keep &= np.array([int(i) not in row_of for i in ids], dtype=bool)
        ids, vectors = ids[keep], vectors[keep]
        if not len(ids):
            return 0
        if normalise:
            vectors = _normalise(vectors)
        half = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float16))
        with self._lock:
            start = len(self.ids)
            ivf = self.ivf
            if ivf is not None:
                # The IVF gets what search re-scores (the float16-rounded vectors), as rows start, start + 1, …
                ivf.add(half.float().numpy())
            # New arrays, then swapped in: a search running meanwhile keeps the ones it started with.
            self.matrix = torch.cat([self.matrix, half])
            self.ids = np.concatenate([self.ids, ids])
            for offset, item in enumerate(ids):
                row_of[int(item)] = start + offset
        if ivf is not None and ivf.needs_retrain:
            self.attach_ivf(ApproximateIndex.build(self.matrix, nprobe=None))
        return len(ids)

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
        if self.uses_approximate:
            result = self._search_approximate(q, k, exclude_rows)
            if result is not None:
                return result
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

    def _search_approximate(self, q: np.ndarray, k: int, exclude_rows: list[int]) -> SearchResult | None:
        """IVF candidates re-scored in float32; None when the IVF found fewer than k usable rows."""
        ids, matrix = self.ids, self.matrix
        rows = self.ivf.candidates(q, max(RERANK_CANDIDATES, k + len(exclude_rows)))
        rows = rows[rows < len(ids)]
        if exclude_rows:
            rows = rows[~np.isin(rows, exclude_rows)]
        if len(rows) < k:
            return None
        # NumPy, not torch: a few hundred rows, and torch's thread pool would wake up for them.
        exact = matrix.numpy()[rows].astype(np.float32) @ q
        order = np.lexsort((ids[rows], -exact))[:k]
        return SearchResult(ids[rows[order]], exact[order].astype(np.float32))

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
