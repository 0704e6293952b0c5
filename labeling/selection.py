"""Which subject a participant sees next.

Rules: never one they already answered (skips count as answered), never a retired one;
gold subjects mixed in by the workflow's schedule; with an active model, the top of the
acquisition ranking (priority) with an exploration share of random picks; without one,
random. Random picks use an indexed `random_key` (no ORDER BY RANDOM()), and "already
seen" is an index probe per candidate (NOT EXISTS on the unique vote key), never a scan of
the participant's history. A random choice among the top few stops volunteers from piling
onto the same handful of subjects.
"""

import random

from django.db.models import Exists, OuterRef

from .models import Participant, Subject, Vote, Workflow

TOP_FEW = 8  # randomise among this many of the best candidates
CANDIDATES = 32


def _unseen(workflow: Workflow, participant: Participant):
    seen = Vote.objects.filter(workflow=workflow, participant=participant, subject=OuterRef("pk"))
    return Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE).exclude(Exists(seen))


def _random_pick(qs, rng: random.Random):
    pivot = rng.random()
    ids = list(qs.filter(random_key__gte=pivot).order_by("random_key").values_list("pk", flat=True)[:TOP_FEW])
    if len(ids) < TOP_FEW:
        ids += list(qs.filter(random_key__lt=pivot).order_by("random_key").values_list("pk", flat=True)[:TOP_FEW])
    return rng.choice(ids) if ids else None


def _ranked_pick(qs, rng: random.Random):
    ids = list(qs.order_by("-priority").values_list("pk", flat=True)[:TOP_FEW])
    return rng.choice(ids) if ids else None


def n_answered(workflow: Workflow, participant: Participant) -> int:
    return Vote.objects.filter(workflow=workflow, participant=participant).count()


def next_subject(
    workflow: Workflow, participant: Participant, rng: random.Random | None = None, n_seen: int | None = None
) -> Subject | None:
    rng = rng or random.Random()
    unseen = _unseen(workflow, participant)
    if n_seen is None:
        n_seen = n_answered(workflow, participant)

    pick = None
    if rng.random() < workflow.gold_share_for(n_seen):
        pick = _random_pick(unseen.exclude(gold_label=""), rng)
    if pick is None:
        ordinary = unseen.filter(gold_label="")
        if workflow.active_model_id and rng.random() >= workflow.exploration_share:
            pick = _ranked_pick(ordinary, rng)
        if pick is None:
            pick = _random_pick(ordinary, rng)
    if pick is None:  # only gold left, or nothing at all
        pick = _random_pick(unseen, rng)
    return Subject.objects.filter(pk=pick).first() if pick else None
