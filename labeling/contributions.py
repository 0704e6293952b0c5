"""Real/bogus votes on a volunteer's "My classifications" page (core.contributions: registered in
LabelingConfig.ready)."""

from __future__ import annotations

from django.db.models import Count, Q

from core import contributions
from core.models import Subject
from labeling.models import Vote

KIND = "real_bogus_votes"


def _standing(participant_ids):
    # Votes taken back (undone, or a skip replaced by a later answer) are not the volunteer's any more.
    return Vote.objects.filter(participant_id__in=participant_ids, retracted=False)


def counts(participant_ids) -> list[dict]:
    rows = (
        _standing(participant_ids)
        .exclude(answer=Vote.SKIP)
        .values("workflow")
        .annotate(
            n=Count("id"),
            n_gold=Count("id", filter=Q(was_gold=True, gold_correct__isnull=False)),
            n_gold_correct=Count("id", filter=Q(was_gold=True, gold_correct=True)),
        )
        .order_by()
    )
    return list(rows)


def consensus(subject: Subject) -> str:
    """As exports show a retired subject's label (labeling.labels.label_of): the expert's if any,
    else the crowd's P(real) at 0.5; empty while the subject is active."""
    if subject.status != Subject.RETIRED:
        return ""
    if subject.gold_label in (Subject.REAL, Subject.BOGUS):
        return subject.gold_label
    if subject.p_real is None:
        return ""
    return Subject.REAL if subject.p_real >= 0.5 else Subject.BOGUS


def recent(participant_ids, limit: int) -> list[dict]:
    votes = (
        _standing(participant_ids)
        .select_related("subject", "workflow__project")
        .order_by("-created_at", "-pk")[:limit]
    )
    return [
        {
            "workflow": vote.workflow,
            "subject": vote.subject,
            "answer": vote.answer,
            "consensus": consensus(vote.subject),
            "pending": "not retired yet",
            "created_at": vote.created_at,
        }
        for vote in votes
    ]


def register() -> None:
    contributions.register(KIND, counts, recent)
