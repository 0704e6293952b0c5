"""Aggregation service: what we believe about subjects and volunteers (issue 4 extends this)."""

from .models import Subject, Vote, Workflow


def update_on_vote(vote: Vote, subject: Subject, workflow: Workflow) -> None:
    """Incremental update on the request path. v1: the fraction of 'real' answers."""
    counts = subject.answer_counts or {}
    total = sum(counts.values())
    if workflow.kind == Workflow.REAL_BOGUS and total:
        subject.p_real = counts.get(Subject.REAL, 0) / total
        subject.aggregation_method = "majority"
