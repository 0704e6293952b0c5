"""Choosing what a volunteer sees next: a comparison and 15 candidates.

Tasks are made on demand. `next_task` gives the participant an open task they have not answered
(the one with most answers first, so tasks complete and pairs collect several opinions), else
creates a new one. A participant never gets a task they answered (the (task, participant)
uniqueness makes a second answer impossible too).

The comparison of a new task is a subject that has been a comparison least often (random among
those). The 15 candidates:

* before the workflow has an embedding: 15 random subjects;
* with an active embedding, mixed ranks of cosine similarity to the comparison
  (settings in ``SELECTION_DEFAULTS``, overridable with ``settings.SKYVOTE_SIMILARITY``):

  - ``n_nearest`` (4) of the nearest neighbours — whether the model's best guesses are right;
  - ``n_uncertain`` (5) drawn with weight exp(−((s − τ)/w)²): pairs whose similarity s is near the
    decision boundary τ (learned in the round: the cosine that best separates chosen from
    unchosen training pairs; before any answers, the 90th percentile of s). Pairs already shown
    to volunteers are weighted instead by the binomial variance 4·r(1−r) of their observed
    similarity rate r — contested pairs are worth asking again, settled ones are not;
  - ``n_mid`` (3) from the middle ranks (5–30 % of the pool) — the model's "maybe" zone;
  - the rest (3) uniformly at random — unbiased coverage, and a check on the model's misses.

  The positions are shuffled so the nearest neighbours do not always sit in the first tiles.
"""

from __future__ import annotations

import random

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef

from core.models import ModelVersion, Participant, Subject, Workflow
from similarity.models import N_CANDIDATES, PairStat, SimilarityTask, SimilarityVote

SELECTION_DEFAULTS = {
    "n_nearest": 4,
    "n_uncertain": 5,
    "n_mid": 3,
    "boundary_width": 0.1,
    "mid_rank_range": (0.05, 0.30),
    "fallback_boundary_quantile": 0.90,
}


def selection_setting(name: str):
    configured = getattr(settings, "SKYVOTE_SIMILARITY", None) or {}
    return configured.get(name, SELECTION_DEFAULTS[name])


def _pool_ids(workflow: Workflow) -> list[int]:
    return list(
        Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _pick_comparison(workflow: Workflow, rng: random.Random) -> Subject | None:
    used = SimilarityTask.objects.filter(workflow=workflow, comparison=OuterRef("pk"))
    base = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    if workflow.comparison_source == Workflow.COMPARE_SET and workflow.comparison_set_id:
        # The scientist chose where comparison images come from; candidates still come from the pool.
        base = base.filter(subject_set_id=workflow.comparison_set_id)
    fresh = base.exclude(Exists(used))
    for queryset in (fresh, base):
        r = rng.random()
        subject = queryset.filter(random_key__gte=r).order_by("random_key").first()
        subject = subject or queryset.order_by("random_key").first()
        if subject is not None:
            return subject
    return None


def _weighted_sample(rng: np.random.Generator, ids: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    """k distinct ids with probability ∝ weight (Gumbel top-k); zero weights are never drawn."""
    if k <= 0 or len(ids) == 0:
        return []
    positive = weights > 0
    ids, weights = ids[positive], weights[positive]
    if len(ids) == 0:
        return []
    keys = np.log(weights) - np.log(-np.log(rng.uniform(1e-12, 1.0, len(ids))))
    return [int(i) for i in ids[np.argsort(-keys)[:k]]]


def choose_candidates(
    workflow: Workflow,
    comparison: Subject,
    rng: random.Random,
    version: ModelVersion | None = None,
    n: int = N_CANDIDATES,
) -> tuple[list[int], list[str], str]:
    """(candidate ids in display order, why each was picked, strategy)."""
    pool = [i for i in _pool_ids(workflow) if i != comparison.pk]
    n = min(n, len(pool))
    if version is None:
        ids = rng.sample(pool, n)
        return ids, ["random"] * n, SimilarityTask.RANDOM

    from similarity.services import EmbeddingUnavailable, load_index

    try:
        index = load_index(version)
    except EmbeddingUnavailable:
        ids = rng.sample(pool, n)
        return ids, ["random"] * n, SimilarityTask.RANDOM
    query = index.vector(comparison.pk)
    if query is None:  # a subject added after the round: nothing to rank by
        ids = rng.sample(pool, n)
        return ids, ["random"] * n, SimilarityTask.RANDOM

    np_rng = np.random.default_rng(rng.randrange(2**32))
    row_of = index.row_of
    in_index = np.array([i for i in pool if i in row_of], dtype=np.int64)
    scores = index.all_scores(query)[[row_of[int(i)] for i in in_index]] if len(in_index) else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    ranked_ids, ranked_scores = in_index[order], scores[order]
    taken: list[int] = []
    sources: list[str] = []

    def take(ids, source):
        for item in ids:
            if len(taken) >= n:
                return
            if item not in taken:
                taken.append(int(item))
                sources.append(source)

    # Nearest neighbours from the exact search (the float16 ranking below may swap near-ties).
    n_nearest = int(selection_setting("n_nearest"))
    pool_set = set(pool)
    exact = index.search(query, k=n_nearest + 32, exclude=[comparison.pk])
    take([int(i) for i in exact.ids if int(i) in pool_set][:n_nearest], "nearest")

    tau = (version.config or {}).get("boundary")
    if tau is None and len(ranked_scores):
        tau = float(np.quantile(ranked_scores, float(selection_setting("fallback_boundary_quantile"))))
    width = float(selection_setting("boundary_width"))
    weights = np.exp(-(((ranked_scores - (tau or 0.0)) / width) ** 2))
    stats = list(
        PairStat.objects.filter(workflow=workflow, comparison=comparison, shown__gt=0).values_list(
            "candidate_id", "chosen", "shown"
        )
    )
    if stats and len(ranked_ids):
        seen = np.array([row[0] for row in stats], dtype=np.int64)
        rates = np.array([row[1] / row[2] for row in stats])
        sorter = np.argsort(ranked_ids)
        at = sorter[np.minimum(np.searchsorted(ranked_ids, seen, sorter=sorter), len(ranked_ids) - 1)]
        found = ranked_ids[at] == seen
        weights[at[found]] = 4.0 * rates[found] * (1.0 - rates[found])
    remaining = ~np.isin(ranked_ids, taken)
    take(
        _weighted_sample(
            np_rng, ranked_ids[remaining], weights[remaining], int(selection_setting("n_uncertain"))
        ),
        "uncertain",
    )
    low, high = selection_setting("mid_rank_range")
    mid = ranked_ids[
        int(low * len(ranked_ids)) : max(int(high * len(ranked_ids)), int(low * len(ranked_ids)) + 1)
    ]
    mid = [int(i) for i in mid if int(i) not in taken]
    take(np_rng.permutation(mid)[: int(selection_setting("n_mid"))], "mid")
    rest = [i for i in pool if i not in taken]
    take(rng.sample(rest, min(len(rest), n - len(taken))), "random")
    positions = list(range(len(taken)))
    rng.shuffle(positions)
    return [taken[p] for p in positions], [sources[p] for p in positions], SimilarityTask.EMBEDDING


def create_task(workflow: Workflow, rng: random.Random | None = None) -> SimilarityTask | None:
    """A new task with a fresh comparison; None if the workflow has fewer than 2 subjects."""
    from similarity.services import active_embedding

    rng = rng or random.Random()
    comparison = _pick_comparison(workflow, rng)
    if comparison is None:
        return None
    version = active_embedding(workflow)
    ids, sources, strategy = choose_candidates(workflow, comparison, rng, version, n=workflow.n_candidates)
    if not ids:
        return None
    return SimilarityTask.objects.create(
        workflow=workflow,
        comparison=comparison,
        candidates=ids,
        candidate_sources=sources,
        strategy=strategy,
        model_version=version if strategy == SimilarityTask.EMBEDDING else None,
    )


def open_tasks_for(workflow: Workflow, participant: Participant):
    answered = SimilarityVote.objects.filter(task=OuterRef("pk"), participant=participant)
    return SimilarityTask.objects.filter(workflow=workflow, retired=False).exclude(Exists(answered))


def next_task(
    workflow: Workflow, participant: Participant, rng: random.Random | None = None
) -> SimilarityTask | None:
    """An open task this participant has not answered, else a new one (None: not enough subjects)."""
    task = (
        open_tasks_for(workflow, participant)
        .select_related("comparison")
        .order_by("-n_votes", "created_at", "pk")
        .first()
    )
    if task is not None:
        return task
    with transaction.atomic():
        return create_task(workflow, rng)


def ensure_task_pool(workflow: Workflow, n_open: int, rng: random.Random | None = None) -> int:
    """Create tasks until the workflow has at least `n_open` open ones; returns how many were made."""
    rng = rng or random.Random()
    made = 0
    while SimilarityTask.objects.filter(workflow=workflow, retired=False).count() < n_open:
        if create_task(workflow, rng) is None:
            break
        made += 1
    return made
