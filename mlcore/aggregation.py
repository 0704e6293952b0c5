"""Crowd maths: turn many noisy votes into per-subject label probabilities. Pure numpy.

Every batch method takes three equal-length integer arrays — ``items`` (subject index), ``workers``
(volunteer index) and ``labels`` (the class each volunteer said) — plus ``n_classes``, and returns an
``AggregationResult``. ``n_items``/``n_workers`` default to max index + 1; pass them to keep subjects or
volunteers without votes (their posterior is the prior, their confusion row the prior mean).

Methods:

* ``majority_vote`` — vote fractions.
* ``dawid_skene`` — EM over per-volunteer confusion matrices (Dawid & Skene 1979), with Dirichlet
  pseudo-counts so that volunteers with few votes are not treated as perfect or perfectly wrong.
* ``swap`` — Space Warps (Marshall et al. 2016): binary, per-volunteer P_L / P_D learned only from gold
  subjects, subject probabilities updated by Bayes' rule vote by vote. ``swap_update`` and
  ``swap_skill_update`` are the per-vote versions used by the web app on every vote.
* ``with_model_vote`` — Gravity Spy-style: the classifier's score counts as one weighted extra witness.
* The model as a voter with its own confusion learned on gold: ``model_confusion`` (binned scores),
  ``model_swap_update`` (one SWAP step), ``swap_with_model`` and ``dawid_skene_with_model`` (one more worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

REAL, BOGUS = 1, 0


@dataclass
class AggregationResult:
    """Output of every aggregation method.

    posterior: (n_items, n_classes), rows sum to 1.
    confusion: (n_workers, n_classes, n_classes), ``confusion[w, true, said]`` = Pr(w says ``said`` | ``true``).
    method: short name ("majority", "dawid_skene", "swap", ... "+model").
    params: method parameters and diagnostics, for provenance (JSON-serialisable).
    n_iter: EM iterations (0 for one-pass methods).
    """

    posterior: np.ndarray
    confusion: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    n_iter: int = 0

    @property
    def labels(self) -> np.ndarray:
        """Most probable class per item (ties go to the lower class index)."""
        return self.posterior.argmax(axis=1)

    @property
    def p_real(self) -> np.ndarray:
        """P(class 1) per item; meaningful for binary real/bogus tasks."""
        return self.posterior[:, REAL]


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def _as_index_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold whole numbers, got non-integer values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {arr.min()}")
    return arr


def validate_votes(items, workers, labels, n_classes: int = 2, n_items: int | None = None, n_workers=None):
    """Check and normalise vote arrays. Returns (items, workers, labels, n_items, n_workers) as int64 arrays.

    Raises ValueError with a message saying what is wrong (shape, range, type).
    """
    if not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    items = _as_index_array(items, "items")
    workers = _as_index_array(workers, "workers")
    labels = _as_index_array(labels, "labels")
    if not (len(items) == len(workers) == len(labels)):
        raise ValueError(
            f"items, workers and labels must have equal length, got {len(items)}, {len(workers)}, {len(labels)}"
        )
    if len(labels) and labels.max() >= n_classes:
        raise ValueError(
            f"labels must be in [0, {n_classes - 1}] for n_classes={n_classes}, got {labels.max()}"
        )
    max_item = int(items.max()) + 1 if len(items) else 0
    max_worker = int(workers.max()) + 1 if len(workers) else 0
    if n_items is None:
        n_items = max_item
    elif n_items < max_item:
        raise ValueError(f"n_items={n_items} but an item index is {max_item - 1}")
    if n_workers is None:
        n_workers = max_worker
    elif n_workers < max_worker:
        raise ValueError(f"n_workers={n_workers} but a worker index is {max_worker - 1}")
    return items, workers, labels, int(n_items), int(n_workers)


def _vote_counts(items, labels, n_items, n_classes) -> np.ndarray:
    return np.bincount(items * n_classes + labels, minlength=n_items * n_classes).reshape(n_items, n_classes)


def _soft_confusion(items, workers, labels, soft_truth, n_workers, n_classes, pseudo=None) -> np.ndarray:
    """confusion counts[w, t, s] = Σ_votes soft_truth[item, t] · [label == s] (+ pseudo), row-normalised."""
    counts = np.empty((n_workers, n_classes, n_classes))
    key = workers * n_classes + labels
    for t in range(n_classes):
        counts[:, t, :] = np.bincount(
            key, weights=soft_truth[items, t], minlength=n_workers * n_classes
        ).reshape(n_workers, n_classes)
    if pseudo is not None:
        counts += pseudo[None, :, :]
    totals = counts.sum(axis=2, keepdims=True)
    uniform = np.full_like(counts, 1.0 / n_classes)
    return np.divide(counts, totals, out=uniform, where=totals > 0)


# ---------------------------------------------------------------------------------------------------------
# Majority vote
# ---------------------------------------------------------------------------------------------------------


def majority_vote(
    items, workers, labels, n_classes: int = 2, n_items=None, n_workers=None
) -> AggregationResult:
    """Posterior = vote fractions (ties split evenly; items without votes are uniform).

    The confusion matrix of each worker is their agreement with the (soft) majority:
    confusion[w, t, s] = Σ over w's votes of posterior[item, t]·[said s], row-normalised (uniform if empty).
    """
    items, workers, labels, n_items, n_workers = validate_votes(
        items, workers, labels, n_classes, n_items, n_workers
    )
    counts = _vote_counts(items, labels, n_items, n_classes).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    posterior = np.divide(
        counts, totals, out=np.full((n_items, n_classes), 1.0 / n_classes), where=totals > 0
    )
    confusion = _soft_confusion(items, workers, labels, posterior, n_workers, n_classes)
    return AggregationResult(posterior, confusion, "majority", {"n_votes": int(len(labels))})


# ---------------------------------------------------------------------------------------------------------
# Dawid–Skene
# ---------------------------------------------------------------------------------------------------------


def confusion_prior(n_classes: int, prior_strength: float = 2.0, prior_accuracy: float = 0.7) -> np.ndarray:
    """Dirichlet pseudo-counts for one confusion matrix: each row holds ``prior_strength`` pseudo-votes,
    a share ``prior_accuracy`` of them on the diagonal and the rest spread evenly over the other classes."""
    off = (1.0 - prior_accuracy) / (n_classes - 1)
    pseudo = np.full((n_classes, n_classes), off)
    np.fill_diagonal(pseudo, prior_accuracy)
    return prior_strength * pseudo


def dawid_skene(
    items,
    workers,
    labels,
    n_classes: int = 2,
    n_items=None,
    n_workers=None,
    max_iter: int = 100,
    tol: float = 1e-6,
    prior_strength: float = 2.0,
    class_prior: Sequence[float] | np.ndarray | None = None,
    init: str | np.ndarray = "majority",
    prior_accuracy: float = 0.7,
    gold_items=None,
    gold_labels=None,
) -> AggregationResult:
    """Dawid–Skene EM with Dirichlet-smoothed confusion matrices.

    Model: item i has true class z_i ~ class_prior; worker w says s with probability confusion[w, z_i, s],
    independently. EM alternates
      E: posterior[i, k] ∝ π_k · Π_{votes (i, w, s)} confusion[w, k, s]
      M: confusion[w, t, s] = (Σ_{w's votes saying s} posterior[i, t] + pseudo[t, s]) / row total
         π_k = (Σ_i posterior[i, k] + 1) / (n_voted_items + K)   (unless ``class_prior`` is given: then fixed)
    with ``pseudo = confusion_prior(K, prior_strength, prior_accuracy)`` — a MAP-style estimate that keeps a
    volunteer with one vote near the prior (70 % accurate by default) instead of at 0 or 1.

    init: "majority" (vote fractions) or an (n_items, K) array of initial posteriors.
    gold_items / gold_labels: optional expert labels; those items' posteriors are clamped to their label in every
    step (semi-supervised DS), so gold votes pin down the volunteers' confusion matrices. With gold and
    init="majority" the first M-step uses the gold votes only, so that a crowd that is systematically wrong is
    not locked in by its own majority (EM only finds a local optimum).
    Stops when the largest change of any posterior entry is below ``tol`` or after ``max_iter`` iterations.
    Vectorised with ``np.bincount`` (K passes per step), so 1e6 votes take about a second.
    """
    items, workers, labels, n_items, n_workers = validate_votes(
        items, workers, labels, n_classes, n_items, n_workers
    )
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
    if not 0.0 < prior_accuracy < 1.0:
        raise ValueError(f"prior_accuracy must be in (0, 1), got {prior_accuracy}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    fixed_prior = None
    if class_prior is not None:
        fixed_prior = np.asarray(class_prior, dtype=float)
        if (
            fixed_prior.shape != (n_classes,)
            or np.any(fixed_prior <= 0)
            or not np.all(np.isfinite(fixed_prior))
        ):
            raise ValueError(f"class_prior must be {n_classes} positive numbers, got {class_prior!r}")
        fixed_prior = fixed_prior / fixed_prior.sum()
    pseudo = confusion_prior(n_classes, prior_strength, prior_accuracy)

    gold = None
    if gold_items is not None or gold_labels is not None:
        if gold_items is None or gold_labels is None:
            raise ValueError("gold_items and gold_labels must be given together")
        g_items = _as_index_array(gold_items, "gold_items")
        g_labels = _as_index_array(gold_labels, "gold_labels")
        if len(g_items) != len(g_labels):
            raise ValueError(
                f"gold_items and gold_labels differ in length: {len(g_items)} vs {len(g_labels)}"
            )
        if len(g_items) and (g_items.max() >= n_items or g_labels.max() >= n_classes):
            raise ValueError(
                f"gold items must be < n_items={n_items} and gold labels < n_classes={n_classes}"
            )
        gold = (g_items, np.eye(n_classes)[g_labels])

    voted = np.bincount(items, minlength=n_items) > 0
    if isinstance(init, str):
        if init != "majority":
            raise ValueError(f"init must be 'majority' or an array of posteriors, got {init!r}")
        posterior = majority_vote(items, workers, labels, n_classes, n_items, n_workers).posterior
    else:
        posterior = np.asarray(init, dtype=float)
        if posterior.shape != (n_items, n_classes) or np.any(posterior < 0):
            raise ValueError(f"init array must have shape {(n_items, n_classes)} with non-negative entries")
        posterior = posterior / np.maximum(posterior.sum(axis=1, keepdims=True), 1e-300)
    if gold is not None:
        posterior[gold[0]] = gold[1]

    n_iter = 0
    converged = False
    prior = fixed_prior if fixed_prior is not None else np.full(n_classes, 1.0 / n_classes)
    confusion = np.full((n_workers, n_classes, n_classes), 1.0 / n_classes)
    for n_iter in range(1, max_iter + 1):
        # M-step
        weights = posterior
        if n_iter == 1 and gold is not None and isinstance(init, str):
            weights = np.zeros_like(posterior)
            weights[gold[0]] = gold[1]
        confusion = _soft_confusion(items, workers, labels, weights, n_workers, n_classes, pseudo)
        if fixed_prior is None:
            prior = (posterior[voted].sum(axis=0) + 1.0) / (voted.sum() + n_classes)
        # E-step (in log space: a subject with hundreds of votes must not underflow)
        log_conf = np.log(np.maximum(confusion, 1e-300))
        contrib = log_conf[workers, :, labels]  # (n_votes, K)
        log_post = np.empty((n_items, n_classes))
        for k in range(n_classes):
            log_post[:, k] = np.bincount(items, weights=contrib[:, k], minlength=n_items)
        log_post += np.log(prior)[None, :]
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        if gold is not None:
            new[gold[0]] = gold[1]
        change = float(np.abs(new - posterior).max()) if n_items else 0.0
        posterior = new
        if change < tol:
            converged = True
            break

    params = {
        "max_iter": max_iter,
        "tol": tol,
        "prior_strength": prior_strength,
        "prior_accuracy": prior_accuracy,
        "class_prior": None if fixed_prior is None else [float(p) for p in fixed_prior],
        "estimated_class_prior": [float(p) for p in prior],
        "init": init if isinstance(init, str) else "array",
        "converged": converged,
        "n_votes": int(len(labels)),
        "n_gold": 0 if gold is None else int(len(gold[0])),
    }
    return AggregationResult(posterior, confusion, "dawid_skene", params, n_iter)


# ---------------------------------------------------------------------------------------------------------
# SWAP (Space Warps)
# ---------------------------------------------------------------------------------------------------------


def swap_update(p: float, says_real: bool, p_l: float, p_d: float) -> float:
    """One SWAP Bayes step: the subject's P(real) after a volunteer with skills (P_L, P_D) votes.

    says real:  p' = p·P_L / (p·P_L + (1 − p)·(1 − P_D))
    says bogus: p' = p·(1 − P_L) / (p·(1 − P_L) + (1 − p)·P_D)
    """
    for name, value in (("p", p), ("p_l", p_l), ("p_d", p_d)):
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    if says_real:
        num, other = p * p_l, (1.0 - p) * (1.0 - p_d)
    else:
        num, other = p * (1.0 - p_l), (1.0 - p) * p_d
    total = num + other
    return p if total == 0 else num / total


def swap_undo(p: float, says_real: bool, p_l: float, p_d: float) -> float:
    """The inverse of ``swap_update``: the P(real) a subject had before a vote with skills (P_L, P_D).

    A SWAP step multiplies the odds by P_L / (1 − P_D) (says real) or (1 − P_L) / P_D (says bogus), and
    steps commute, so dividing that factor out removes one vote whatever came after it.
    """
    for name, value in (("p", p), ("p_l", p_l), ("p_d", p_d)):
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    if says_real:
        num, other = p * (1.0 - p_d), (1.0 - p) * p_l
    else:
        num, other = p * p_d, (1.0 - p) * (1.0 - p_l)
    total = num + other
    return p if total == 0 else num / total


def swap_skill(
    real_seen: float,
    real_said_real: float,
    bogus_seen: float,
    bogus_said_bogus: float,
    pseudo_counts: tuple[float, float] = (1.0, 1.0),
    p_min: float = 0.01,
    p_max: float = 0.99,
) -> tuple[float, float]:
    """(P_L, P_D) from a volunteer's gold tallies.

    P_L = (real_said_real + a) / (real_seen + a + b),  P_D = (bogus_said_bogus + a) / (bogus_seen + a + b),
    with ``pseudo_counts = (a, b)`` pseudo-correct and pseudo-wrong answers (default (1, 1): a new volunteer
    starts at 0.5, i.e. carries no information, as in Space Warps), clipped to [p_min, p_max] so that no single
    volunteer can ever settle a subject alone.
    """
    a, b = pseudo_counts
    if a < 0 or b < 0 or a + b <= 0:
        raise ValueError(f"pseudo_counts must be non-negative with a positive sum, got {pseudo_counts}")
    if not 0.0 <= p_min < p_max <= 1.0:
        raise ValueError(f"need 0 <= p_min < p_max <= 1, got {p_min}, {p_max}")
    if (
        real_said_real > real_seen
        or bogus_said_bogus > bogus_seen
        or min(real_said_real, bogus_said_bogus) < 0
    ):
        raise ValueError("gold tallies must satisfy 0 <= said_correct <= seen")
    p_l = (real_said_real + a) / (real_seen + a + b)
    p_d = (bogus_said_bogus + a) / (bogus_seen + a + b)
    return min(max(p_l, p_min), p_max), min(max(p_d, p_min), p_max)


def swap_tally_update(
    real_seen: float, real_said_real: float, bogus_seen: float, bogus_said_bogus: float, truth: int, said: int
) -> tuple[float, float, float, float]:
    """The four gold tallies after one gold vote (truth/said: 1 = real, 0 = bogus)."""
    if truth not in (0, 1) or said not in (0, 1):
        raise ValueError(f"truth and said must be 0 (bogus) or 1 (real), got {truth}, {said}")
    if truth == REAL:
        return real_seen + 1, real_said_real + (said == REAL), bogus_seen, bogus_said_bogus
    return real_seen, real_said_real, bogus_seen + 1, bogus_said_bogus + (said == BOGUS)


def swap_skill_update(
    real_seen: float,
    real_said_real: float,
    bogus_seen: float,
    bogus_said_bogus: float,
    truth: int,
    said: int,
    pseudo_counts: tuple[float, float] = (1.0, 1.0),
    p_min: float = 0.01,
    p_max: float = 0.99,
) -> tuple[float, float]:
    """(P_L, P_D) after a volunteer answered ``said`` on a gold subject whose expert label is ``truth``.

    Takes the tallies *before* this vote (as stored on ParticipantSkill); the caller stores the new tallies
    from ``swap_tally_update`` with the same arguments. Equivalent to
    ``swap_skill(*swap_tally_update(..., truth, said), pseudo_counts, p_min, p_max)``.
    """
    tallies = swap_tally_update(real_seen, real_said_real, bogus_seen, bogus_said_bogus, truth, said)
    return swap_skill(*tallies, pseudo_counts=pseudo_counts, p_min=p_min, p_max=p_max)


def swap(
    items,
    workers,
    labels,
    gold_items=None,
    gold_labels=None,
    prior: float = 0.5,
    pseudo_counts: tuple[float, float] = (1.0, 1.0),
    p_min: float = 0.01,
    p_max: float = 0.99,
    n_items=None,
    n_workers=None,
    online: bool = True,
) -> AggregationResult:
    """Space Warps aggregation of binary votes (label 1 = "real") given in the order they were cast.

    Each volunteer's P_L = Pr(says real | real) and P_D = Pr(says bogus | bogus) come from their votes on gold
    subjects (``gold_items`` with expert ``gold_labels``), see ``swap_skill``. Each vote moves its subject's
    P(real) by ``swap_update`` starting from ``prior``. With ``online=True`` (the production behaviour) a vote
    uses the volunteer's skill as it stood when the vote was cast — only gold votes earlier in the arrays
    count; with ``online=False`` every vote uses the final skills (a batch re-run).

    Because Bayes updates add in log-odds, the result equals applying ``swap_update`` vote by vote; the
    implementation does it in one vectorised pass (cumulative gold tallies per volunteer + ``np.bincount``).
    Gold subjects get a posterior from the votes like any other subject.
    """
    n_items_given = n_items is not None
    items, workers, labels, n_items, n_workers = validate_votes(items, workers, labels, 2, n_items, n_workers)
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    swap_skill(0, 0, 0, 0, pseudo_counts, p_min, p_max)  # validates pseudo_counts and clipping bounds
    a, b = pseudo_counts

    truth = np.full(n_items, -1, dtype=np.int64)
    if gold_items is not None or gold_labels is not None:
        if gold_items is None or gold_labels is None:
            raise ValueError("gold_items and gold_labels must be given together")
        g_items = _as_index_array(gold_items, "gold_items")
        g_labels = _as_index_array(gold_labels, "gold_labels")
        if len(g_items) != len(g_labels):
            raise ValueError(
                f"gold_items and gold_labels differ in length: {len(g_items)} vs {len(g_labels)}"
            )
        if len(g_labels) and g_labels.max() > 1:
            raise ValueError("gold_labels must be 0 (bogus) or 1 (real)")
        if len(g_items) and g_items.max() >= n_items:
            if n_items_given:
                raise ValueError(f"gold item index {g_items.max()} is out of range for n_items={n_items}")
            n_items = int(g_items.max()) + 1  # gold subjects nobody has voted on yet
            truth = np.full(n_items, -1, dtype=np.int64)
        truth[g_items] = g_labels

    vote_truth = truth[items] if len(items) else np.zeros(0, dtype=np.int64)
    is_real_gold = (vote_truth == REAL).astype(float)
    is_bogus_gold = (vote_truth == BOGUS).astype(float)
    real_ok = is_real_gold * (labels == REAL)
    bogus_ok = is_bogus_gold * (labels == BOGUS)

    if online:
        # Tallies before each vote = per-worker cumulative sums, exclusive of the vote itself.
        order = np.argsort(workers, kind="stable")
        w_sorted = workers[order]
        starts = (
            np.r_[0, np.flatnonzero(np.diff(w_sorted)) + 1] if len(order) else np.zeros(0, dtype=np.int64)
        )

        def exclusive_cumsum(x):
            xs = x[order]
            cs = np.cumsum(xs)
            base = np.repeat(cs[starts] - xs[starts], np.diff(np.r_[starts, len(xs)]))
            out = np.empty_like(x)
            out[order] = cs - xs - base
            return out

        real_seen, real_said_real = exclusive_cumsum(is_real_gold), exclusive_cumsum(real_ok)
        bogus_seen, bogus_said_bogus = exclusive_cumsum(is_bogus_gold), exclusive_cumsum(bogus_ok)
    else:
        real_seen = np.bincount(workers, is_real_gold, minlength=n_workers)[workers]
        real_said_real = np.bincount(workers, real_ok, minlength=n_workers)[workers]
        bogus_seen = np.bincount(workers, is_bogus_gold, minlength=n_workers)[workers]
        bogus_said_bogus = np.bincount(workers, bogus_ok, minlength=n_workers)[workers]

    p_l = np.clip((real_said_real + a) / (real_seen + a + b), p_min, p_max)
    p_d = np.clip((bogus_said_bogus + a) / (bogus_seen + a + b), p_min, p_max)
    says_real = labels == REAL
    log_lr = np.where(says_real, np.log(p_l) - np.log1p(-p_d), np.log1p(-p_l) - np.log(p_d))
    log_odds = math.log(prior / (1 - prior)) + np.bincount(items, weights=log_lr, minlength=n_items)
    p_real = 1.0 / (1.0 + np.exp(-log_odds))
    posterior = np.column_stack([1.0 - p_real, p_real])

    # Final skills for the confusion matrices.
    fin_real = np.bincount(workers, is_real_gold, minlength=n_workers)
    fin_real_ok = np.bincount(workers, real_ok, minlength=n_workers)
    fin_bogus = np.bincount(workers, is_bogus_gold, minlength=n_workers)
    fin_bogus_ok = np.bincount(workers, bogus_ok, minlength=n_workers)
    final_pl = np.clip((fin_real_ok + a) / (fin_real + a + b), p_min, p_max)
    final_pd = np.clip((fin_bogus_ok + a) / (fin_bogus + a + b), p_min, p_max)
    confusion = np.empty((n_workers, 2, 2))
    confusion[:, BOGUS, BOGUS] = final_pd
    confusion[:, BOGUS, REAL] = 1 - final_pd
    confusion[:, REAL, REAL] = final_pl
    confusion[:, REAL, BOGUS] = 1 - final_pl
    params = {
        "prior": prior,
        "pseudo_counts": list(pseudo_counts),
        "p_min": p_min,
        "p_max": p_max,
        "online": online,
        "n_gold": int((truth >= 0).sum()),
        "n_votes": int(len(labels)),
    }
    return AggregationResult(posterior, confusion, "swap", params)


# ---------------------------------------------------------------------------------------------------------
# Model as a witness; small helpers
# ---------------------------------------------------------------------------------------------------------


def with_model_vote(result_or_posterior, model_scores, weight: float = 1.0, eps: float = 1e-6):
    """Combine a crowd posterior with a classifier's scores, Gravity Spy-style.

    The model counts as one extra, independent witness whose likelihood for class k is its score s_k,
    tempered by ``weight`` (log-linear pooling):

        posterior'_ik ∝ posterior_ik · s_ik ** weight

    weight=0 ignores the model; weight=1 is Bayes' rule for a calibrated model trained on balanced classes;
    weight<1 trusts it less. Scores are clipped to [eps, 1 − eps] so a confident model cannot zero out a class.

    result_or_posterior: an AggregationResult, an (n, K) posterior, or an (n,) array of P(real).
    model_scores: (n,) P(real) for binary tasks, or (n, K) class probabilities.
    Returns the same kind as given (AggregationResult with method "<method>+model", (n, K) or (n,) array).
    """
    if weight < 0 or not np.isfinite(weight):
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    result = result_or_posterior if isinstance(result_or_posterior, AggregationResult) else None
    post = np.asarray(result.posterior if result is not None else result_or_posterior, dtype=float)
    one_d = post.ndim == 1
    if one_d:
        post = np.column_stack([1.0 - post, post])
    if post.ndim != 2:
        raise ValueError(f"posterior must be (n,) or (n, K), got shape {post.shape}")
    scores = np.asarray(model_scores, dtype=float)
    if scores.ndim == 1:
        if post.shape[1] != 2:
            raise ValueError("1-D model_scores (P(real)) need a binary posterior")
        scores = np.column_stack([1.0 - scores, scores])
    if scores.shape != post.shape:
        raise ValueError(f"model_scores shape {scores.shape} does not match posterior shape {post.shape}")
    if not np.all(np.isfinite(scores)) or np.any(scores < 0) or np.any(scores > 1):
        raise ValueError("model_scores must be probabilities in [0, 1]")
    log_post = np.log(np.maximum(post, 1e-300)) + weight * np.log(np.clip(scores, eps, 1 - eps))
    log_post -= log_post.max(axis=1, keepdims=True)
    combined = np.exp(log_post)
    combined /= combined.sum(axis=1, keepdims=True)
    if result is not None:
        params = dict(result.params, model_weight=weight)
        return AggregationResult(combined, result.confusion, f"{result.method}+model", params, result.n_iter)
    return combined[:, 1] if one_d else combined


def posterior_entropy(posterior, base: float = 2.0) -> np.ndarray:
    """Shannon entropy of each row (bits by default); 0 for a certain label, log_base(K) for uniform.
    A 1-D array is read as P(real) of a binary task."""
    p = np.asarray(posterior, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1) / math.log(base)


def label_accuracy(posterior, truth) -> float:
    """Share of items whose most probable class equals ``truth`` (ties count as half right)."""
    p = np.asarray(posterior, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    truth = np.asarray(truth, dtype=np.int64)
    best = p.max(axis=1, keepdims=True)
    winners = np.isclose(p, best, rtol=0, atol=1e-12)
    return (
        float((winners[np.arange(len(truth)), truth] / winners.sum(axis=1)).mean())
        if len(truth)
        else float("nan")
    )


# ---------------------------------------------------------------------------------------------------------
# The model as a voter: its score binned, with a confusion learned on gold (SWAP step, Dawid–Skene worker)
# ---------------------------------------------------------------------------------------------------------

# Bins of the model's P(real). Finer at the ends, where a calibrated classifier says most and errs least.
MODEL_BIN_EDGES = (0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97, 0.99, 1.0)


def _check_edges(edges) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or len(e) < 2 or e[0] != 0.0 or e[-1] != 1.0 or np.any(np.diff(e) <= 0):
        raise ValueError(f"bin edges must rise strictly from 0 to 1, got {edges!r}")
    return e


def model_score_bins(scores, edges=MODEL_BIN_EDGES) -> np.ndarray:
    """The bin of each score (0 … len(edges) − 2); −1 for a missing score (NaN): no model vote there."""
    e = _check_edges(edges)
    s = np.asarray(scores, dtype=float)
    finite = np.isfinite(s)
    if np.any((s[finite] < 0) | (s[finite] > 1)):
        raise ValueError("model scores must be probabilities in [0, 1] (NaN for none)")
    bins = np.clip(np.searchsorted(e, np.where(finite, s, 0.0), side="right") - 1, 0, len(e) - 2)
    return np.where(finite, bins, -1).astype(np.int64)


def model_confusion(scores, truth, edges=MODEL_BIN_EDGES, prior_strength: float = 2.0) -> np.ndarray:
    """The model's confusion as a voter: ``confusion[c, b]`` = Pr(its score falls in bin b | true class c).

    Learned from subjects whose class is known (gold; ``truth`` 1 = real, 0 = bogus) and that the model never
    trained on. Each row is smoothed towards the pooled bin shares q_b of all those subjects with
    ``prior_strength`` pseudo-counts: confusion[c, b] = (n_cb + a·q_b) / (n_c + a). Shrinking towards the
    pooled shares (not towards uniform) keeps the likelihood ratio of a bin at 1 when the classes score alike
    there, so a model whose scores say nothing about the class moves no posterior. Without any labelled
    subject every row is uniform: no information.
    """
    if prior_strength < 0 or not np.isfinite(prior_strength):
        raise ValueError(f"prior_strength must be a finite number >= 0, got {prior_strength}")
    bins = model_score_bins(scores, edges)
    truth = _as_index_array(truth, "truth")
    if len(truth) != len(bins):
        raise ValueError(f"scores and truth differ in length: {len(bins)} vs {len(truth)}")
    if len(truth) and truth.max() > 1:
        raise ValueError("truth must be 0 (bogus) or 1 (real)")
    n_bins = len(edges) - 1
    keep = bins >= 0
    counts = np.zeros((2, n_bins))
    np.add.at(counts, (truth[keep], bins[keep]), 1.0)
    total = counts.sum()
    if total == 0:
        return np.full((2, n_bins), 1.0 / n_bins)
    pooled = counts.sum(axis=0) / total
    rows = counts + prior_strength * pooled[None, :]
    sums = rows.sum(axis=1, keepdims=True)
    return np.divide(rows, sums, out=np.tile(pooled, (2, 1)), where=sums > 0)


def _check_model_confusion(confusion, n_bins: int) -> np.ndarray:
    conf = np.asarray(confusion, dtype=float)
    if conf.shape != (2, n_bins) or np.any(conf < 0) or not np.all(np.isfinite(conf)):
        raise ValueError(f"model confusion must be a (2, {n_bins}) array of probabilities")
    return conf


def model_log_lr(scores, confusion, edges=MODEL_BIN_EDGES) -> np.ndarray:
    """The model's vote on each subject as a log likelihood ratio, log Pr(bin | real) − log Pr(bin | bogus).

    0 (no vote) for a missing score and for a bin where neither class was ever seen (both zero).
    """
    bins = model_score_bins(scores, edges)
    conf = _check_model_confusion(confusion, len(edges) - 1)
    real, bogus = conf[REAL, np.maximum(bins, 0)], conf[BOGUS, np.maximum(bins, 0)]
    usable = (bins >= 0) & (real > 0) & (bogus > 0)
    out = np.zeros(len(bins))
    out[usable] = np.log(real[usable]) - np.log(bogus[usable])
    # One side never seen in this bin: cap the ratio as a volunteer's skills are capped (0.01 … 0.99).
    cap = math.log(0.99 / 0.01)
    out[(bins >= 0) & (real > 0) & (bogus == 0)] = cap
    out[(bins >= 0) & (real == 0) & (bogus > 0)] = -cap
    return np.clip(out, -cap, cap)


def model_swap_update(p: float, score: float, confusion, edges=MODEL_BIN_EDGES) -> float:
    """One SWAP step for the model's vote: P(real) after the model scored the subject ``score``.

    Like ``swap_update`` it multiplies the odds by a likelihood ratio (the model's, from its binned
    confusion), so it commutes with the volunteers' steps and ``model_swap_undo`` takes it out again.
    """
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    if p in (0.0, 1.0):
        return p
    lr = float(model_log_lr([score], confusion, edges)[0])
    return 1.0 / (1.0 + math.exp(-(math.log(p) - math.log1p(-p) + lr)))


def model_swap_undo(p: float, score: float, confusion, edges=MODEL_BIN_EDGES) -> float:
    """The inverse of ``model_swap_update``: P(real) without the model's vote."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    if p in (0.0, 1.0):
        return p
    lr = float(model_log_lr([score], confusion, edges)[0])
    return 1.0 / (1.0 + math.exp(-(math.log(p) - math.log1p(-p) - lr)))


def swap_with_model(result_or_p_real, scores, confusion, edges=MODEL_BIN_EDGES):
    """Add the model's vote to SWAP posteriors: log-odds += the model's log likelihood ratio per subject.

    result_or_p_real: an AggregationResult of a binary method or an (n,) array of P(real); scores: (n,)
    P(real) with NaN where the model does not vote. Returns the same kind (method "<method>+model").
    """
    result = result_or_p_real if isinstance(result_or_p_real, AggregationResult) else None
    p = np.asarray(result.p_real if result is not None else result_or_p_real, dtype=float)
    lr = model_log_lr(scores, confusion, edges)
    if lr.shape != p.shape:
        raise ValueError(f"scores shape {lr.shape} does not match the posterior's {p.shape}")
    with np.errstate(divide="ignore"):
        log_odds = np.log(p) - np.log1p(-p) + lr
    out = np.where((p == 0) | (p == 1), p, 1.0 / (1.0 + np.exp(-log_odds)))
    if result is None:
        return out
    params = dict(result.params, model_voted=int((model_score_bins(scores, edges) >= 0).sum()))
    posterior = np.column_stack([1.0 - out, out])
    return AggregationResult(posterior, result.confusion, f"{result.method}+model", params, result.n_iter)


def dawid_skene_with_model(
    items,
    workers,
    labels,
    model_scores,
    n_items=None,
    n_workers=None,
    max_iter: int = 100,
    tol: float = 1e-6,
    prior_strength: float = 2.0,
    prior_accuracy: float = 0.7,
    class_prior=None,
    gold_items=None,
    gold_labels=None,
    edges=MODEL_BIN_EDGES,
    model_prior_strength: float = 2.0,
    model_confusion_fixed=None,
) -> AggregationResult:
    """Binary Dawid–Skene with the model as one more worker whose "answer" is the bin of its score.

    The volunteers are handled exactly as in ``dawid_skene`` (same priors, same steps); the model adds
    log Pr(bin | k) to each subject it scored (``model_scores`` (n_items,), NaN = no vote) in the E-step,
    and its (2 × bins) confusion is re-estimated in the M-step from the posteriors like a volunteer's, smoothed
    towards its pooled bin shares (``model_confusion``'s prior), unless ``model_confusion_fixed`` is given
    (e.g. learned on gold). The class prior is estimated from subjects with volunteer votes only, as in
    ``dawid_skene``, so a model whose confusion rows are equal (it says nothing) leaves every posterior
    equal to the crowd-only one. The model's confusion is returned in ``params["model_confusion"]``.
    """
    items, workers, labels, n_items, n_workers = validate_votes(items, workers, labels, 2, n_items, n_workers)
    scores = np.asarray(model_scores, dtype=float)
    if scores.shape != (n_items,):
        raise ValueError(f"model_scores must have shape ({n_items},), got {scores.shape}")
    bins = model_score_bins(scores, edges)
    n_bins = len(edges) - 1
    if not 0.0 < prior_accuracy < 1.0 or prior_strength < 0 or max_iter < 1:
        raise ValueError("need prior_strength >= 0, prior_accuracy in (0, 1) and max_iter >= 1")
    fixed = None if model_confusion_fixed is None else _check_model_confusion(model_confusion_fixed, n_bins)
    fixed_prior = None
    if class_prior is not None:
        fixed_prior = np.asarray(class_prior, dtype=float)
        if fixed_prior.shape != (2,) or np.any(fixed_prior <= 0) or not np.all(np.isfinite(fixed_prior)):
            raise ValueError(f"class_prior must be 2 positive numbers, got {class_prior!r}")
        fixed_prior = fixed_prior / fixed_prior.sum()
    gold = None
    if gold_items is not None or gold_labels is not None:
        if gold_items is None or gold_labels is None:
            raise ValueError("gold_items and gold_labels must be given together")
        g_items, g_labels = (
            _as_index_array(gold_items, "gold_items"),
            _as_index_array(gold_labels, "gold_labels"),
        )
        if len(g_items) != len(g_labels) or (
            len(g_items) and (g_items.max() >= n_items or g_labels.max() > 1)
        ):
            raise ValueError("gold items must be < n_items, gold labels 0 or 1, and both of one length")
        gold = (g_items, np.eye(2)[g_labels])
    pseudo = confusion_prior(2, prior_strength, prior_accuracy)
    scored = np.flatnonzero(bins >= 0)
    sbins = bins[scored]
    pooled = np.bincount(sbins, minlength=n_bins).astype(float)
    pooled = pooled / pooled.sum() if pooled.sum() else np.full(n_bins, 1.0 / n_bins)

    voted = np.bincount(items, minlength=n_items) > 0
    posterior = majority_vote(items, workers, labels, 2, n_items, n_workers).posterior
    if gold is not None:
        posterior[gold[0]] = gold[1]
    prior = fixed_prior if fixed_prior is not None else np.full(2, 0.5)
    m_conf = fixed if fixed is not None else np.tile(pooled, (2, 1))
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):
        weights = posterior
        if n_iter == 1 and gold is not None:
            weights = np.zeros_like(posterior)
            weights[gold[0]] = gold[1]
        confusion = _soft_confusion(items, workers, labels, weights, n_workers, 2, pseudo)
        if fixed is None:
            counts = np.stack(
                [np.bincount(sbins, weights=weights[scored, k], minlength=n_bins) for k in (0, 1)]
            )
            rows = counts + model_prior_strength * pooled[None, :]
            sums = rows.sum(axis=1, keepdims=True)
            m_conf = np.divide(rows, sums, out=np.tile(pooled, (2, 1)), where=sums > 0)
        if fixed_prior is None:
            prior = (posterior[voted].sum(axis=0) + 1.0) / (voted.sum() + 2)
        log_conf = np.log(np.maximum(confusion, 1e-300))
        contrib = log_conf[workers, :, labels]
        log_post = np.empty((n_items, 2))
        for k in range(2):
            log_post[:, k] = np.bincount(items, weights=contrib[:, k], minlength=n_items)
        # The model's vote, as a log likelihood ratio on the real side (a shared term changes nothing).
        lr = np.zeros(n_items)
        lr[scored] = model_log_lr(scores[scored], m_conf, edges)
        log_post[:, REAL] += lr
        log_post += np.log(prior)[None, :]
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        if gold is not None:
            new[gold[0]] = gold[1]
        change = float(np.abs(new - posterior).max()) if n_items else 0.0
        posterior = new
        if change < tol:
            converged = True
            break
    params = {
        "max_iter": max_iter,
        "tol": tol,
        "prior_strength": prior_strength,
        "prior_accuracy": prior_accuracy,
        "estimated_class_prior": [float(p) for p in prior],
        "converged": converged,
        "n_votes": int(len(labels)),
        "n_gold": 0 if gold is None else int(len(gold[0])),
        "model_voted": int(len(scored)),
        "model_edges": [float(e) for e in edges],
        "model_confusion": [[float(x) for x in row] for row in m_conf],
        "model_confusion_fixed": fixed is not None,
    }
    return AggregationResult(posterior, confusion, "dawid_skene+model", params, n_iter)
