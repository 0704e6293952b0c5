"""Simulated volunteers for real/bogus vetting: benchmarks, retirement studies and soft labels. Pure numpy.

A crowd is a panel of volunteers, each with a sensitivity (Pr(says real | real)) and specificity
(Pr(says bogus | bogus)). Honest volunteers draw both uniformly from ranges matching what expert panels
vetting real/bogus candidates showed (sensitivity ~0.77–0.99, specificity ~0.87–0.996); a share of random
spammers answer 50/50 and a share of "always real" volunteers click real on everything. Activity is
heavy-tailed (lognormal weights): a few volunteers cast many of the votes, as on every citizen-science site.

Label convention: 1 = real, 0 = bogus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aggregation import dawid_skene

HONEST, SPAMMER, ALWAYS_REAL = "honest", "spammer", "always_real"


@dataclass
class Panel:
    """The volunteers: per-volunteer sensitivity, specificity, kind and relative activity (sums to 1)."""

    sensitivity: np.ndarray
    specificity: np.ndarray
    kind: np.ndarray  # str per volunteer: honest / spammer / always_real
    activity: np.ndarray

    def __len__(self) -> int:
        return len(self.sensitivity)

    def answer(self, rng: np.random.Generator, workers: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Draw each volunteer's answer (int8, 1 = real) for subjects of the given true class."""
        p_real = np.where(truth == 1, self.sensitivity[workers], 1.0 - self.specificity[workers])
        return (rng.random(len(workers)) < p_real).astype(np.int8)


@dataclass
class CrowdSim:
    """Simulated votes in arrival order, plus the truth about the volunteers who cast them."""

    items: np.ndarray  # int64 (n_votes,)
    workers: np.ndarray  # int64 (n_votes,)
    labels: np.ndarray  # int8 (n_votes,), 1 = real
    sensitivity: np.ndarray  # (n_volunteers,)
    specificity: np.ndarray  # (n_volunteers,)
    kind: np.ndarray  # (n_volunteers,) honest / spammer / always_real

    @property
    def n_votes(self) -> int:
        return len(self.labels)


def make_panel(
    n_volunteers: int = 200,
    seed: int | np.random.Generator = 0,
    spammer_share: float = 0.05,
    always_real_share: float = 0.02,
    sensitivity: tuple[float, float] = (0.77, 0.99),
    specificity: tuple[float, float] = (0.87, 0.996),
    activity_sigma: float = 1.0,
) -> Panel:
    """Draw a panel of volunteers; shares are rounded to whole volunteers (at least one where the share > 0)."""
    if n_volunteers < 1:
        raise ValueError(f"n_volunteers must be >= 1, got {n_volunteers}")
    for name, share in (("spammer_share", spammer_share), ("always_real_share", always_real_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    if spammer_share + always_real_share > 1.0:
        raise ValueError("spammer_share + always_real_share must not exceed 1")
    for name, (lo, hi) in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"{name} range must satisfy 0 <= low <= high <= 1, got {(lo, hi)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def count(share):
        return 0 if share == 0 else max(1, int(round(share * n_volunteers)))

    n_spam = min(count(spammer_share), n_volunteers)
    n_always = min(count(always_real_share), n_volunteers - n_spam)
    kind = np.array(
        [HONEST] * (n_volunteers - n_spam - n_always) + [SPAMMER] * n_spam + [ALWAYS_REAL] * n_always
    )
    kind = kind[rng.permutation(n_volunteers)]
    sens = rng.uniform(*sensitivity, n_volunteers)
    spec = rng.uniform(*specificity, n_volunteers)
    sens[kind == SPAMMER], spec[kind == SPAMMER] = 0.5, 0.5
    sens[kind == ALWAYS_REAL], spec[kind == ALWAYS_REAL] = 1.0, 0.0
    activity = rng.lognormal(0.0, activity_sigma, n_volunteers)
    return Panel(sens, spec, kind, activity / activity.sum())


def _distinct_volunteers(rng, activity: np.ndarray, n_items: int, k: int, chunk: int = 4096) -> np.ndarray:
    """(n_items, k) volunteer indices, distinct within a row, drawn with probability ∝ activity without
    replacement (Gumbel top-k trick, vectorised in chunks of rows). Column order is the arrival order."""
    n_vol = len(activity)
    if k > n_vol:
        raise ValueError(f"cannot draw {k} distinct volunteers per subject from a panel of {n_vol}")
    log_w = np.log(activity)
    out = np.empty((n_items, k), dtype=np.int64)
    for lo in range(0, n_items, chunk):
        hi = min(n_items, lo + chunk)
        keys = log_w[None, :] + rng.gumbel(size=(hi - lo, n_vol))
        top = (
            np.argpartition(-keys, k - 1, axis=1)[:, :k]
            if k < n_vol
            else np.tile(np.arange(n_vol), (hi - lo, 1))
        )
        # Sorting by key gives the sequential without-replacement order (most active tend to come first).
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        out[lo:hi] = np.take_along_axis(top, order, axis=1)
    return out


@dataclass
class VoteSequences:
    """Per-subject vote sequences for retirement simulations: votes arrive one at a time, column by column.

    workers[i, j] / labels[i, j] is the j-th vote on subject i (distinct volunteers within a subject).
    """

    workers: np.ndarray  # int64 (n_items, max_votes)
    labels: np.ndarray  # int8 (n_items, max_votes)
    panel: Panel

    def first(self, k: int) -> CrowdSim:
        """The first ``k`` votes of every subject as flat arrays in round order (all first votes, then all
        second votes, ...), the order in which they would arrive if subjects were served evenly."""
        if not 0 <= k <= self.workers.shape[1]:
            raise ValueError(f"k must be in [0, {self.workers.shape[1]}], got {k}")
        n = self.workers.shape[0]
        items = np.tile(np.arange(n, dtype=np.int64), k)
        return CrowdSim(
            items,
            self.workers[:, :k].T.ravel(),
            self.labels[:, :k].T.ravel(),
            self.panel.sensitivity,
            self.panel.specificity,
            self.panel.kind,
        )


def simulate_vote_sequences(
    truth: np.ndarray, max_votes: int = 30, seed: int = 0, panel: Panel | None = None, **panel_kwargs
) -> VoteSequences:
    """Streaming variant: draw up to ``max_votes`` votes per subject, to be consumed one at a time.

    A retirement simulation takes column j of every still-active subject in round j and stops using a
    subject once it retires, so every rule sees exactly the votes it would have received in production.
    ``panel_kwargs`` go to ``make_panel`` when no panel is given.
    """
    truth = _check_truth(truth)
    rng = np.random.default_rng(seed)
    if panel is None:
        panel = make_panel(seed=rng, **panel_kwargs)
    workers = _distinct_volunteers(rng, panel.activity, len(truth), max_votes)
    labels = panel.answer(rng, workers.ravel(), np.repeat(truth, max_votes)).reshape(workers.shape)
    return VoteSequences(workers, labels, panel)


def simulate_crowd(
    truth: np.ndarray,
    n_volunteers: int = 200,
    votes_per_item: int = 5,
    seed: int = 0,
    spammer_share: float = 0.05,
    always_real_share: float = 0.02,
    sensitivity: tuple[float, float] = (0.77, 0.99),
    specificity: tuple[float, float] = (0.87, 0.996),
) -> CrowdSim:
    """``votes_per_item`` votes from distinct simulated volunteers on every subject of ``truth`` (0/1 array).

    Votes are returned in arrival order (round by round, see ``VoteSequences.first``), so order-dependent
    methods such as online SWAP see a realistic sequence.
    """
    truth = _check_truth(truth)
    if votes_per_item < 0:
        raise ValueError(f"votes_per_item must be >= 0, got {votes_per_item}")
    rng = np.random.default_rng(seed)
    panel = make_panel(
        n_volunteers, rng, spammer_share, always_real_share, sensitivity=sensitivity, specificity=specificity
    )
    seqs = simulate_vote_sequences(truth, votes_per_item, seed=rng, panel=panel)
    return seqs.first(votes_per_item)


def _check_truth(truth) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.ndim != 1:
        raise ValueError(f"truth must be a 1-D array of 0/1 labels, got shape {truth.shape}")
    if truth.size and not np.isin(truth, (0, 1)).all():
        raise ValueError("truth must contain only 0 (bogus) and 1 (real)")
    return truth.astype(np.int8)


def aggregate_soft_labels(
    truth: np.ndarray, votes_per_item: int = 5, seed: int = 0, **crowd_kwargs
) -> np.ndarray:
    """P(real) per subject from ``votes_per_item`` simulated volunteers, aggregated with Dawid–Skene.

    Used by the active-learning benchmark to train on crowd labels instead of the ground truth.
    """
    truth = _check_truth(truth)
    if len(truth) == 0:
        return np.zeros(0)
    sim = simulate_crowd(truth, votes_per_item=votes_per_item, seed=seed, **crowd_kwargs)
    result = dawid_skene(sim.items, sim.workers, sim.labels, n_classes=2, n_items=len(truth))
    return result.posterior[:, 1]
