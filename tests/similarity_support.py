"""Helpers for the similarity tests: a demo-like workflow of galaxy cutouts and tiny training settings."""

import uuid

from core.models import Participant

# A CPU-light round: small inputs, few epochs (tests only; the defaults live in similarity.training).
TINY_TRAINING = {
    "input_size": 32,
    "pretrain_epochs": 3,
    "warm_pretrain_epochs": 1,
    "finetune_epochs": 4,
    "batch_size": 64,
}


def similarity_workflow(project, n_subjects=40, seed=0):
    from similarity.demo import seed_similarity_demo

    return seed_similarity_demo(project, n_subjects=n_subjects, seed=seed, request_training=False)


def participant(name="p"):
    return Participant.objects.create(
        kind=Participant.ANONYMOUS, session_key=f"test-{name}-{uuid.uuid4().hex[:8]}"
    )


def answer_with_classes(task, volunteer, **kwargs):
    """Answer a task as a perfect volunteer who knows the hidden classes."""
    from core.models import Subject
    from similarity.services import record_similarity_vote

    classes = dict(
        Subject.objects.filter(pk__in=[task.comparison_id, *task.candidates]).values_list(
            "pk", "truth_subtype"
        )
    )
    chosen = [c for c in task.candidates if classes[c] == classes[task.comparison_id]]
    return record_similarity_vote(
        task=task,
        participant=volunteer,
        chosen=chosen,
        none_similar=not chosen,
        idempotency_key=uuid.uuid4(),
        source="simulated",
        **{"trusted": "ticket" not in kwargs, **kwargs},  # simulated, unless a test serves it a ticket
    )
