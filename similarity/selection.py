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
from core.sampling import random_one, random_window
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


def _comparison_querysets(workflow: Workflow):
    """(subjects never a comparison yet, all possible comparisons)."""
    # Check tasks do not count: their comparison was not compared with anything.
    used = SimilarityTask.objects.filter(
        workflow=workflow, comparison=OuterRef("pk"), check_candidate__isnull=True
    )
    base = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    if workflow.comparison_source == Workflow.COMPARE_SET and workflow.comparison_set_id:
        # The scientist chose where comparison images come from; candidates still come from the pool.
        base = base.filter(subject_set_id=workflow.comparison_set_id)
    return base.exclude(Exists(used)), base


def _pick_comparison(workflow: Workflow, rng: random.Random) -> Subject | None:
    fresh, base = _comparison_querysets(workflow)
    for queryset in (fresh, base):
        subject = random_one(queryset, rng)
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
    pool: list[int] | None = None,
) -> tuple[list[int], list[str], str]:
    """(candidate ids in display order, why each was picked, strategy). `pool`: the ids to choose
    from, when the caller already has them (by default every active subject of the workflow)."""
    pool = [i for i in (_pool_ids(workflow) if pool is None else pool) if i != comparison.pk]
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


def create_task_set(
    workflow: Workflow, n: int, *, n_checks: int = 0, rng: random.Random | None = None
) -> list[SimilarityTask]:
    """`n` new tasks made in one go (a paid assignment's), `n_checks` of them check tasks: the
    comparison itself sits among the candidates at a random tile. Each task has its own comparison
    while the workflow has enough subjects (never-compared ones first).

    Candidates are chosen like a volunteer's (choose_candidates: mixed embedding ranks when there is an
    active embedding). Without an embedding they come from one random window of the pool a few times
    the size the tasks need, so the pool is never loaded whole; with one, the ranking needs every
    active id, loaded once for all the tasks (the index already holds a vector per subject)."""
    from similarity.services import active_embedding

    rng = rng or random.Random()
    n_checks = max(0, min(n_checks, n))
    n_candidates = workflow.n_candidates
    fresh, base = _comparison_querysets(workflow)
    comparisons = random_window(fresh, rng, n)
    if len(comparisons) < n:
        taken = set(comparisons)
        comparisons += [i for i in random_window(base, rng, n + len(taken)) if i not in taken][
            : n - len(comparisons)
        ]
    if not comparisons:
        return []
    distinct = len(comparisons)
    # Fewer subjects than tasks: the comparisons come round again (with other candidates).
    comparisons += [comparisons[i % distinct] for i in range(n - distinct)]
    version = active_embedding(workflow)
    pool_qs = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    if version is None:
        pool = random_window(pool_qs, rng, max(4 * n_candidates, 2 * n_candidates * n))
    else:
        pool = _pool_ids(workflow)
    subjects = Subject.objects.only("pk").in_bulk(comparisons)
    is_check = [True] * n_checks + [False] * (n - n_checks)
    rng.shuffle(is_check)
    tasks = []
    for comparison_id, check in zip(comparisons, is_check, strict=True):
        comparison = subjects[comparison_id]
        ids, sources, strategy = choose_candidates(
            workflow, comparison, rng, version, n=n_candidates - 1 if check else n_candidates, pool=pool
        )
        if not ids:
            continue
        if check:
            at = rng.randrange(len(ids) + 1)
            ids.insert(at, comparison_id)
            sources.insert(at, "check")
        tasks.append(
            SimilarityTask(
                workflow=workflow,
                comparison_id=comparison_id,
                candidates=ids,
                candidate_sources=sources,
                strategy=strategy,
                model_version=version if strategy == SimilarityTask.EMBEDDING else None,
                check_candidate_id=comparison_id if check else None,
            )
        )
    return SimilarityTask.objects.bulk_create(tasks)


def open_tasks_for(workflow: Workflow, participant: Participant):
    answered = SimilarityVote.objects.filter(task=OuterRef("pk"), participant=participant)
    # Check tasks exist for paid assignments only: a volunteer never gets one.
    return SimilarityTask.objects.filter(
        workflow=workflow, retired=False, check_candidate__isnull=True
    ).exclude(Exists(answered))


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
    while (
        SimilarityTask.objects.filter(workflow=workflow, retired=False, check_candidate__isnull=True).count()
        < n_open
    ):
        if create_task(workflow, rng) is None:
            break
        made += 1
    return made
