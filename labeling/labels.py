"""Labels for training: every subject of a workflow with enough evidence, with its confidence.

A subject has enough evidence when it is gold (an expert said so), when it retired as decided
(not waiting for expert review), or when it has at least `min_votes` votes and a confident
posterior (max(P, 1 − P) ≥ the workflow's consensus fraction). The learning loop trains on
these; exports use them too. `count_decided_labels` counts the same set with one query, so
the loop can cheaply decide when K new labels have arrived.
"""

from dataclasses import dataclass

from django.db.models import Count, Q

from core.models import Subject, Workflow


@dataclass
class TrainingLabel:
    subject_id: int
    p_real: float  # aggregated P(real); gold subjects use 1.0/0.0 from the expert label
    weight: float  # confidence in [0, 1]: |2 p_real − 1|, 1.0 for gold
    n_votes: int
    is_gold: bool
    is_holdout: bool = False  # held out for model evaluation: callers must not train on it


GOLD_ANSWERS = (Subject.REAL, Subject.BOGUS)


def _confidence_floor(workflow: Workflow) -> float:
    """A posterior counts as confident at max(P, 1 − P) ≥ this (the consensus fraction, ≥ 0.5)."""
    return min(max(float(workflow.consensus_fraction), 0.5), 1.0)


def _evidence_filter(workflow: Workflow, min_votes: int, include_undecided: bool) -> Q:
    gold = Q(gold_label__in=GOLD_ANSWERS)
    if include_undecided:
        return gold | Q(vote_count__gte=max(min_votes, 1)) | Q(status=Subject.RETIRED, vote_count__gte=1)
    floor = _confidence_floor(workflow)
    retired_decided = Q(status=Subject.RETIRED, needs_review=False, vote_count__gte=1)
    confident = Q(vote_count__gte=max(min_votes, 1), needs_review=False) & (
        Q(p_real__gte=floor) | Q(p_real__lte=1.0 - floor)
    )
    return gold | retired_decided | confident


def _queryset(workflow: Workflow, min_votes: int | None, include_undecided: bool):
    if min_votes is None:
        min_votes = workflow.min_votes
    # Non-gold subjects need a P(real): one whose only answers are skips teaches nothing.
    return (
        Subject.objects.filter(workflow=workflow)
        .filter(_evidence_filter(workflow, int(min_votes), include_undecided))
        .filter(Q(gold_label__in=GOLD_ANSWERS) | Q(p_real__isnull=False))
    )


def training_labels(
    workflow: Workflow, min_votes: int | None = None, include_undecided: bool = False
) -> list[TrainingLabel]:
    """Every subject of `workflow` with enough evidence, ordered by id.

    `min_votes` defaults to the workflow's `min_votes`. With `include_undecided`, subjects with
    at least `min_votes` votes are returned whatever their posterior (weights tell how sure).
    """
    rows = (
        _queryset(workflow, min_votes, include_undecided)
        .order_by("pk")
        .values_list("pk", "gold_label", "p_real", "vote_count", "is_holdout")
    )
    labels = []
    for pk, gold_label, p_real, vote_count, is_holdout in rows:
        if gold_label in GOLD_ANSWERS:
            p, weight, is_gold = (1.0 if gold_label == Subject.REAL else 0.0), 1.0, True
        else:
            p = min(max(float(p_real), 0.0), 1.0)
            weight, is_gold = abs(2.0 * p - 1.0), False
        labels.append(TrainingLabel(pk, p, weight, int(vote_count), is_gold, bool(is_holdout)))
    return labels


def count_decided_labels(workflow: Workflow) -> int:
    """How many subjects `training_labels(workflow)` would return, with one COUNT query."""
    return _queryset(workflow, None, False).count()


def decided_label_counts(workflow: Workflow) -> tuple[int, int]:
    """(decided labels, of which held out) with one query: the subjects `training_labels(workflow)`
    returns, and those of them a round evaluates on and never trains on (gold or `is_holdout`,
    as `loop.services.heldout_labels` picks them)."""
    counts = _queryset(workflow, None, False).aggregate(
        decided=Count("pk"),
        held_out=Count("pk", filter=Q(gold_label__in=GOLD_ANSWERS) | Q(is_holdout=True)),
    )
    return counts["decided"], counts["held_out"]


def decided_filter(workflow: Workflow) -> Q:
    """The subjects `training_labels(workflow)` returns, as a filter: exports and the API annotate
    `decided` with it (per workflow, since each has its own thresholds)."""
    return _evidence_filter(workflow, int(workflow.min_votes), False) & (
        Q(gold_label__in=GOLD_ANSWERS) | Q(p_real__isnull=False)
    )


def label_of(gold_label: str, decided: bool, p_real: float | None) -> tuple[str, str, float | None]:
    """(label, label_source, confidence) of one subject as exports and the API show it: the gold
    label if any, else the crowd's once decided (P(real) >= 0.5 → real), else empty."""
    if gold_label in GOLD_ANSWERS:
        return gold_label, "gold", 1.0
    if decided and p_real is not None:
        return (Subject.REAL if p_real >= 0.5 else Subject.BOGUS), "crowd", abs(2.0 * p_real - 1.0)
    return "", "", (abs(2.0 * p_real - 1.0) if p_real is not None else None)
