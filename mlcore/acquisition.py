"""Acquisition strategies for active learning: pure functions of model outputs (modAL-style).

Every function takes model outputs for the *unlabelled pool* — P(real) per item, MC-dropout
probabilities (T, N), or penultimate features (N, D) — and returns a ``Ranking``: pool positions
from most to least worth labelling, with the score they were ranked by (higher = more informative).
Nothing here touches a model, a database or global random state (randomness comes from a seed or
a numpy Generator passed in), so the same code drives the web learning loop and the simulation.

Uncertainty: least_confidence, margin, entropy (one deterministic pass) and bald (MC dropout).
Rare class: balanced — entropy ranking split by predicted class, so a fixed share of every batch
comes from the items the model calls real (most uncertain first on each side), which a rare class
needs: plain entropy can fill a batch with bogus items just below the boundary.
Type uncertainty (models with a type head): type_entropy — the entropy of the type softmax, weighted
by P(bogus), i.e. the subjects that would most improve the bogus-type model.
Batch diversity: ``diverse_top`` takes the top M of any ranking and chooses k among them by greedy
k-center on the features (Sener & Savarese 2018), so a batch is not 100 near-copies of one
confusing artefact. Exploration: ``with_exploration`` replaces a share of each batch with random
pool items, which keeps the labelled set representative and catches what the model is wrongly
confident about.

``rank_pool(strategy, p_real, ...)`` is the one ranking both the web learning loop and the
simulation use: a strategy name ("entropy", "bald+diversity", … see ``parse_strategy``) → the order
of the whole pool and every item's score. ``select_batch`` takes the first k of that order, with an
optional exploration share.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "Ranking",
    "STRATEGIES",
    "random_sampling",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "class_balanced",
    "BALANCED_REAL_SHARE",
    "type_entropy",
    "rank_scores",
    "k_center_greedy",
    "diverse_top",
    "with_exploration",
    "DIVERSITY_SUFFIX",
    "DIVERSE_HEAD",
    "STRATEGY_NAMES",
    "parse_strategy",
    "rank_pool",
    "select_batch",
]

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "type_entropy", "balanced")
DIVERSITY_SUFFIX = "+diversity"
# Every name parse_strategy accepts, in canonical spelling.
STRATEGY_NAMES = STRATEGIES + tuple(base + DIVERSITY_SUFFIX for base in STRATEGIES)
# With "+diversity", rank_pool re-orders this many of the top-ranked items by greedy k-center. The web
# loop ranks its whole pool, and k-center over all of it would cost O(n²) distances; only the head is spread.
DIVERSE_HEAD = 1000
_EPS = 1e-12


class Ranking(NamedTuple):
    indices: np.ndarray  # pool positions, most informative first
    scores: np.ndarray  # the score each was ranked by (NaN for exploration picks)
    explored: np.ndarray | None = None  # True where an item was drawn at random for exploration

    def __len__(self) -> int:
        return len(self.indices)

    def top(self, k: int) -> Ranking:
        return Ranking(
            self.indices[:k], self.scores[:k], None if self.explored is None else self.explored[:k]
        )


def _probabilities(p_real, name: str = "p_real") -> np.ndarray:
    p = np.asarray(p_real, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:  # (N, 2) class probabilities (bogus, real)
        p = p[:, 1]
    if p.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 2), got {p.shape}")
    if not np.all(np.isfinite(p)) or p.min(initial=0) < 0 or p.max(initial=1) > 1:
        raise ValueError(f"{name} must be probabilities in [0, 1] without NaN")
    return p


def _rank(scores: np.ndarray, k: int | None) -> Ranking:
    """Highest score first; ties keep pool order (deterministic). Top-k via partition for huge pools."""
    n = len(scores)
    if k is not None and k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if k is not None and k < n:
        # Everything tied with the k-th score is kept, then a stable sort decides: same order as a full sort.
        kth = np.partition(-scores, k - 1)[k - 1] if k else np.inf
        candidates = np.flatnonzero(-scores <= kth)
        order = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    else:
        order = np.argsort(-scores, kind="stable")
    return Ranking(order, scores[order])


def rank_scores(scores, k: int | None = None) -> Ranking:
    """Rank precomputed informativeness scores (e.g. ScoreResult.bald), highest first."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be a finite 1-D array, got shape {scores.shape}")
    return _rank(scores, k)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def random_sampling(n: int, k: int | None = None, *, rng: np.random.Generator | int | None = 0) -> Ranking:
    """A uniformly random order of the n pool items (scores are the random keys)."""
    rng = np.random.default_rng(rng)
    return _rank(rng.random(n), k)


def least_confidence(p_real, k: int | None = None) -> Ranking:
    """1 − max(p, 1 − p): highest for p = 0.5."""
    p = _probabilities(p_real)
    return _rank(1.0 - np.maximum(p, 1.0 - p), k)


def margin(p_real, k: int | None = None) -> Ranking:
    """Smallest margin between the two class probabilities first; score = 1 − |p_real − p_bogus|."""
    p = _probabilities(p_real)
    return _rank(1.0 - np.abs(2.0 * p - 1.0), k)


def entropy(p_real, k: int | None = None) -> Ranking:
    """Predictive entropy in bits."""
    return _rank(_binary_entropy(_probabilities(p_real)), k)


def bald(mc_probs, k: int | None = None) -> Ranking:
    """BALD (Houlsby et al. 2011) from MC-dropout P(real) of shape (T, N): H[E_t p] − E_t H[p], in bits.

    High when the dropout samples disagree confidently — epistemic uncertainty that a label resolves —
    and low for items that are merely ambiguous for every sample (aleatoric noise).
    """
    probs = np.asarray(mc_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise ValueError(f"mc_probs must have shape (T, N) with T ≥ 2 samples, got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0) < 0 or probs.max(initial=1) > 1:
        raise ValueError("mc_probs must be probabilities in [0, 1] without NaN")
    info = _binary_entropy(probs.mean(axis=0)) - _binary_entropy(probs).mean(axis=0)
    return _rank(np.maximum(info, 0.0), k)


# Share of predicted-real items in a "balanced" batch: half, i.e. as many reals as bogus however rare.
BALANCED_REAL_SHARE = 0.5


def class_balanced(p_real, k: int | None = None, *, real_share: float = BALANCED_REAL_SHARE) -> Ranking:
    """Class-balanced uncertainty: predictive entropy, ranked separately among the items predicted real
    (p ≥ 0.5) and those predicted bogus, then interleaved so that every prefix of the order holds about
    ``real_share`` of predicted-real items (within one) while both sides last; then the rest of the
    longer side. Scores are the entropies (bits).

    For a rare class the boundary region is mostly bogus, and plain entropy spends most of a batch
    there; the quota keeps finding (and correcting) the items the model believes are real.
    """
    if not 0.0 <= real_share <= 1.0:
        raise ValueError(f"real_share must be in [0, 1], got {real_share}")
    p = _probabilities(p_real)
    h = _binary_entropy(p)
    sides = []
    for mask in (p >= 0.5, p < 0.5):
        idx = np.flatnonzero(mask)
        sides.append(idx[np.argsort(-h[idx], kind="stable")])
    # The j-th item of a side goes to the j-th slot the quota gives that side: after m picks,
    # ceil(share·m) of them are predicted real, so real j sits at floor(j / share) and bogus j at
    # ceil((j + 1) / (1 − share)) − 1. Merging by slot keeps the quota; an exhausted side just stops.
    j_real, j_bogus = np.arange(len(sides[0])), np.arange(len(sides[1]))
    with np.errstate(divide="ignore", over="ignore"):  # a tiny share puts that side at infinity
        slot_real = np.floor(j_real / real_share) if real_share > 0 else np.full(len(j_real), np.inf)
        slot_bogus = (
            np.ceil((j_bogus + 1) / (1.0 - real_share)) - 1
            if real_share < 1
            else np.full(len(j_bogus), np.inf)
        )
    merged = np.concatenate(sides)
    order = merged[np.argsort(np.concatenate([slot_real, slot_bogus]), kind="stable")]
    if k is not None:
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        order = order[:k]
    return Ranking(order.astype(np.int64), h[order])


def type_entropy(type_probs, p_real=None, k: int | None = None) -> Ranking:
    """Type uncertainty of a type head: entropy of the type softmax (N, K) in units of log K (1 =
    every type equally likely, 0 = sure), times P(bogus) = 1 − p_real when p_real is given.

    The weight targets "which subjects would most improve the bogus-type model": a subject the
    model calls real has no bogus type to learn, however unsure the head is about it.
    """
    probs = np.asarray(type_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"type_probs must have shape (N, K) with K ≥ 2 types, got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0) < 0 or probs.max(initial=1) > 1:
        raise ValueError("type_probs must be probabilities in [0, 1] without NaN")
    q = np.clip(probs, _EPS, 1.0)
    q = q / q.sum(axis=1, keepdims=True)
    h = -(q * np.log(q)).sum(axis=1) / np.log(probs.shape[1])
    h = np.clip(h, 0.0, 1.0)
    if p_real is not None:
        p = _probabilities(p_real)
        if len(p) != len(h):
            raise ValueError(f"{len(p)} P(real) values but {len(h)} type probability rows")
        h = h * (1.0 - p)
    return _rank(h, k)


def _min_sq_distances(points: np.ndarray, centres: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each point, squared Euclidean distance to its nearest centre (chunked to bound memory)."""
    result = np.full(len(points), np.inf)
    centre_norms = np.einsum("ij,ij->i", centres, centres)
    point_norms = np.einsum("ij,ij->i", points, points)
    for start in range(0, len(centres), chunk):
        c = centres[start : start + chunk]
        d = point_norms[:, None] - 2.0 * points @ c.T + centre_norms[None, start : start + chunk]
        np.minimum(result, d.min(axis=1), out=result)
    return np.maximum(result, 0.0)


def k_center_greedy(features, k: int, *, candidates=None, labeled_features=None) -> Ranking:
    """Greedy k-center: repeatedly pick the candidate farthest from everything chosen or labelled.

    features: (N, D) for the pool; candidates: pool positions allowed (default all, in priority
    order — with no labelled set the first candidate is the first pick); labeled_features: (L, D) of
    already-labelled items. Returns picks in order with their distance to the nearest centre at
    pick time (a 2-approximation of the optimal k-center cover).
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features must be finite")
    cand = np.arange(len(feats)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    if k <= 0:
        return Ranking(np.empty(0, dtype=np.int64), np.empty(0))
    points = feats[cand]
    if labeled_features is not None and len(labeled_features):
        labeled = np.asarray(labeled_features, dtype=np.float64)
        if labeled.ndim != 2 or labeled.shape[1] != feats.shape[1]:
            raise ValueError(f"labeled_features must have shape (L, {feats.shape[1]}), got {labeled.shape}")
        nearest = _min_sq_distances(points, labeled)
    else:
        nearest = np.full(len(points), np.inf)
    chosen, distances = [], []
    for _ in range(k):
        i = int(np.argmax(nearest))  # first maximum → ties follow candidate priority order
        chosen.append(i)
        distances.append(np.sqrt(nearest[i]) if np.isfinite(nearest[i]) else np.inf)
        d = np.sum((points - points[i]) ** 2, axis=1)
        np.minimum(nearest, d, out=nearest)
        nearest[i] = -1.0  # never again
    return Ranking(cand[np.array(chosen)], np.array(distances))


def diverse_top(
    base: Ranking, features, k: int, *, top_m: int | None = None, labeled_features=None
) -> Ranking:
    """Take the top_m (default 10·k) items of any ranking, then choose k of them by greedy k-center.

    The returned scores are the base ranking's scores of the chosen items, in k-center pick order.
    """
    top_m = max(k, top_m if top_m is not None else 10 * k)
    head = base.top(top_m)
    picked = k_center_greedy(features, k, candidates=head.indices, labeled_features=labeled_features)
    position = {int(idx): i for i, idx in enumerate(head.indices)}
    scores = np.array([head.scores[position[int(i)]] for i in picked.indices])
    return Ranking(picked.indices, scores)


def with_exploration(
    ranking: Ranking, k: int, n_pool: int, share: float = 0.1, *, rng: np.random.Generator | int | None = 0
) -> Ranking:
    """First k − round(share·k) of ranking, then random pool items (not already picked) to make k."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"exploration share must be in [0, 1], got {share}")
    k = min(k, n_pool)
    n_random = int(round(share * k))
    exploit = ranking.top(k - n_random)
    rng = np.random.default_rng(rng)
    remaining = np.setdiff1d(np.arange(n_pool), exploit.indices, assume_unique=False)
    n_random = min(n_random, len(remaining), k - len(exploit))
    explore = rng.choice(remaining, size=n_random, replace=False) if n_random else np.empty(0, dtype=np.int64)
    return Ranking(
        np.concatenate([exploit.indices, explore]).astype(np.int64),
        np.concatenate([exploit.scores, np.full(len(explore), np.nan)]),
        np.concatenate([np.zeros(len(exploit), bool), np.ones(len(explore), bool)]),
    )


def parse_strategy(name: str | None) -> tuple[str, bool]:
    """'entropy', 'bald', 'bald+diversity' … → (base strategy, diversity). Case and surrounding
    spaces do not matter; an empty name means "entropy", the workflows' default."""
    name = (name or "entropy").strip().lower()
    diversity = name.endswith(DIVERSITY_SUFFIX)
    base = name[: -len(DIVERSITY_SUFFIX)] if diversity else name
    if base not in STRATEGIES:
        raise ValueError(
            f"unknown acquisition strategy {name!r}; use one of {', '.join(STRATEGIES)} "
            f"(optionally {DIVERSITY_SUFFIX})"
        )
    return base, diversity


def _pool_size(
    n_pool, *, p_real=None, mc_probs=None, bald_scores=None, features=None, type_probs=None
) -> int:
    """The pool size all given model outputs agree on (or n_pool when nothing else tells it)."""
    sizes = []
    if p_real is not None:
        sizes.append(len(np.atleast_1d(np.asarray(p_real))))  # (N,) or (N, 2)
    if mc_probs is not None:
        sizes.append(np.asarray(mc_probs).shape[-1])
    if bald_scores is not None:
        sizes.append(len(bald_scores))
    if features is not None:
        sizes.append(len(features))
    if type_probs is not None:
        sizes.append(len(type_probs))
    if n_pool is None:
        if not sizes:
            raise ValueError("pass n_pool (or model outputs) so the pool size is known")
        n_pool = sizes[0]
    if any(s != n_pool for s in sizes):
        raise ValueError(f"model outputs disagree on the pool size: {sorted(set(sizes + [n_pool]))}")
    return int(n_pool)


_UNCERTAINTY = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "balanced": class_balanced,
}


def rank_pool(
    strategy: str,
    p_real=None,
    *,
    bald_scores=None,
    mc_probs=None,
    features=None,
    labeled_features=None,
    n_pool: int | None = None,
    seed: np.random.Generator | int | None = 0,
    diverse_head: int = DIVERSE_HEAD,
    top_m: int | None = None,
    type_probs=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The acquisition ranking of a whole pool → (order, scores).

    order: a permutation of range(n), most worth labelling first. scores: per item, in pool order,
    the score the strategy ranked by (higher = more informative; for "random" the random key).

    strategy: a name ``parse_strategy`` accepts. Uncertainty strategies need p_real (N,); "bald"
    needs bald_scores (N,) (ScoreResult.bald) or mc_probs (T, N); "random" draws from seed (an int,
    or a numpy Generator whose stream it continues). With "+diversity" the first
    min(n, diverse_head) places are chosen among the top top_m (default 10·diverse_head) by greedy
    k-center on features (N, D), starting from labeled_features (L, D) when given, so they are not
    near-copies of one confusing artefact; the rest follow in the strategy's order.
    "type_entropy" needs type_probs (N, K) (ScoreResult.type_probs of a model with a type head) and
    weights by P(bogus) when p_real is given.
    """
    base, diversity = parse_strategy(strategy)
    n = _pool_size(
        n_pool,
        p_real=p_real,
        mc_probs=mc_probs,
        bald_scores=bald_scores,
        features=features,
        type_probs=type_probs,
    )
    if base == "random":
        ranking = random_sampling(n, rng=seed)
    elif base == "bald":
        if mc_probs is None and bald_scores is None:
            raise ValueError("strategy 'bald' needs mc_probs or bald_scores (score with mc_samples > 0)")
        ranking = bald(mc_probs) if mc_probs is not None else rank_scores(bald_scores)
    elif base == "type_entropy":
        if type_probs is None:
            raise ValueError("strategy 'type_entropy' needs type probabilities (a model with a type head)")
        ranking = type_entropy(type_probs, p_real)
    else:
        if p_real is None:
            raise ValueError(f"strategy {base!r} needs p_real")
        ranking = _UNCERTAINTY[base](p_real)
    scores = np.empty(n, dtype=np.float64)
    scores[ranking.indices] = ranking.scores
    order = ranking.indices
    if diversity:
        if features is None:
            raise ValueError("diversity needs penultimate features (score with features=True)")
        picked = diverse_top(
            ranking, features, min(n, diverse_head), top_m=top_m, labeled_features=labeled_features
        )
        order = np.concatenate([picked.indices, order[~np.isin(order, picked.indices)]])
    return order, scores


def select_batch(
    strategy: str,
    k: int,
    *,
    n_pool: int | None = None,
    p_real=None,
    mc_probs=None,
    bald_scores=None,
    features=None,
    labeled_features=None,
    diversity: bool = False,
    top_m: int | None = None,
    exploration: float = 0.0,
    rng: np.random.Generator | int | None = 0,
    type_probs=None,
) -> Ranking:
    """Choose k pool items: the first of ``rank_pool``'s order, then ``with_exploration`` replaces
    the ``exploration`` share of them by random pool items.

    strategy is a name ``parse_strategy`` accepts (``diversity=True`` is the same as a
    "+diversity" suffix); diversity then spreads exactly the exploited part of the batch.
    """
    rng = np.random.default_rng(rng)
    base, suffixed = parse_strategy(strategy)
    n_pool = _pool_size(
        n_pool,
        p_real=p_real,
        mc_probs=mc_probs,
        bald_scores=bald_scores,
        features=features,
        type_probs=type_probs,
    )
    n_exploit = k - int(round(exploration * min(k, n_pool)))
    order, scores = rank_pool(
        base + (DIVERSITY_SUFFIX if diversity or suffixed else ""),
        p_real,
        bald_scores=bald_scores,
        mc_probs=mc_probs,
        features=features,
        labeled_features=labeled_features,
        n_pool=n_pool,
        seed=rng,
        diverse_head=n_exploit,
        top_m=top_m,
        type_probs=type_probs,
    )
    return with_exploration(Ranking(order, scores[order]), k, n_pool, exploration, rng=rng)
