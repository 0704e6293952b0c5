"""Similarity answers on a volunteer's "My classifications" page (core.contributions: registered in
SimilarityConfig.ready). The subject of an answer is its task's comparison image; similarity has no
gold and no per-subject consensus."""

from __future__ import annotations

from django.db.models import Count

from core import contributions
from similarity.models import SimilarityVote

KIND = "similarity_answers"


def counts(participant_ids) -> list[dict]:
    rows = (
        SimilarityVote.objects.filter(participant_id__in=participant_ids)
        .values("workflow")
        .annotate(n=Count("id"))
        .order_by()
    )
    return list(rows)


def answer_text(vote: SimilarityVote) -> str:
    if vote.none_similar:
        return "none similar"
    return f"{vote.n_chosen} of {len(vote.task.candidates or [])} similar"


def recent(participant_ids, limit: int) -> list[dict]:
    votes = (
        SimilarityVote.objects.filter(participant_id__in=participant_ids)
        .select_related("task__comparison", "workflow__project")
        .order_by("-created_at", "-pk")[:limit]
    )
    return [
        {
            "workflow": vote.workflow,
            "subject": vote.task.comparison,
            "answer": answer_text(vote),
            "consensus": "",
            "pending": "–",
            "created_at": vote.created_at,
        }
        for vote in votes
    ]


def register() -> None:
    contributions.register(KIND, counts, recent)
