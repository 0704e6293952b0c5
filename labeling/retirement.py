"""Retirement rules. v1: a subject retires after N votes (issue 4 adds SWAP and consensus)."""

from django.utils import timezone

from .models import Subject, Workflow


def retire(subject: Subject, reason: str) -> None:
    subject.status = Subject.RETIRED
    subject.retired_reason = reason
    subject.retired_at = timezone.now()
    subject.save(update_fields=["status", "retired_reason", "retired_at"])


def retire_if_decided(subject: Subject, workflow: Workflow) -> bool:
    """Retire the (locked) subject if the workflow's rule says it is decided. True if it did now."""
    if subject.is_retired:
        return False
    if subject.vote_count >= workflow.retirement_limit:
        retire(subject, f"count: {subject.vote_count} votes")
        return True
    return False
