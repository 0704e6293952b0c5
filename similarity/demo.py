"""Demo data for the similarity workflow: synthetic galaxy and nebula cutouts (mlcore.galaxies).

`seed_similarity_demo(project)` is called by the demo seeding (`make demo`). It is idempotent:
subjects already present are not created again, and the workflow's settings are left as the
owner set them. `seed_similarity_answers(workflow, heldout_target)` adds simulated volunteers'
answers until the held-out set has enough scored answers for an embedding to be promoted
(similarity.training.promotion_decision never promotes on fewer).
"""

from __future__ import annotations

import numpy as np
from django.db import transaction

from core.models import ModelVersion, Subject, Workflow
from jobs.models import Job

WORKFLOW_SLUG = "similar"
WORKFLOW_NAME = "Which images are similar?"
# Not "on the left": on a phone the comparison image is above the grid.
QUESTION = "Which of these 15 images are similar to the comparison image?"
SUBJECT_SET_NAME = "Galaxy and nebula cutouts (synthetic)"
# One subject in twenty is a near-duplicate (rotated/flipped copy with fresh noise) of another,
# so search by image has a known right answer.
NEAR_DUPLICATE_SHARE = 0.05
CUTOUT_SIZE = 96


def seed_similarity_demo(
    project, n_subjects: int = 600, seed: int = 0, *, request_training: bool = True, progress=None
) -> Workflow:
    """Create (or complete) the similarity workflow "Which images are similar?" (slug "similar").

    n_subjects includes the near-duplicates. With request_training (and no embedding yet) a first
    round is queued (self-supervised pretraining, then fine-tuning on whatever answers exist by then); it
    is promoted only if enough held-out answers exist when it runs (`seed_similarity_answers`).
    """
    from core import workflows
    from core.ingest import add_subject, subject_set_named
    from mlcore.galaxies import generate_cutouts, near_duplicate

    # Through the workflow builder's services, as a scientist's workflow is made (idempotent).
    workflow, _ = workflows.create_workflow(
        project,
        WORKFLOW_SLUG,
        kind=Workflow.SIMILARITY,
        name=WORKFLOW_NAME,
        question=QUESTION,
        is_active=True,
        retirement_limit=3,
        train_every=60,
    )
    subject_set = subject_set_named(project, workflow, SUBJECT_SET_NAME)

    n_duplicates = int(round(n_subjects * NEAR_DUPLICATE_SHARE))
    n_originals = n_subjects - n_duplicates
    existing = set(
        Subject.objects.filter(project=project, workflow=workflow).values_list("external_id", flat=True)
    )
    batch = generate_cutouts(n_originals, seed=seed, size=CUTOUT_SIZE)
    rng = np.random.default_rng(seed + 1)
    originals = rng.choice(n_originals, size=min(n_duplicates, n_originals), replace=False)
    items = [(f"gal-{seed}-{i:05d}", batch.images[i], batch.classes[i], {}) for i in range(n_originals)] + [
        (
            f"gal-{seed}-{int(j):05d}-dup",
            near_duplicate(batch.images[j], rng),
            batch.classes[j],
            {"near_duplicate_of": f"gal-{seed}-{int(j):05d}"},
        )
        for j in originals
    ]
    for n, (external_id, image, kind, extra) in enumerate(items):
        if external_id in existing:
            continue
        with transaction.atomic():
            add_subject(
                project=project,
                workflow=workflow,
                subject_set=subject_set,
                external_id=external_id,
                array=image,
                metadata={"generator": "mlcore.galaxies", "seed": seed, "size_px": CUTOUT_SIZE, **extra},
                source="synthetic",
                # The hidden class: never shown to volunteers; simulated volunteers answer with it.
                truth_subtype=kind,
            )
        if progress:
            progress(n + 1, len(items))

    has_embedding = ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.EMBEDDING).exists()
    has_job = Job.objects.filter(workflow=workflow, kind=Job.EMBED).exists()
    if request_training and not has_embedding and not has_job:
        from similarity.services import request_embedding_round

        request_embedding_round(workflow, reason="initial self-supervised pretraining on the demo cutouts")
    return workflow


def scored_heldout_answers(workflow: Workflow) -> int:
    """Held-out answers the promotion can score: at least one chosen and one unchosen candidate."""
    from similarity.models import SimilarityVote
    from similarity.training import is_heldout

    rows = SimilarityVote.objects.filter(
        workflow=workflow, task__check_candidate__isnull=True, none_similar=False
    ).values_list("task_id", "n_chosen", "task__candidates")
    return sum(
        1
        for task_id, n_chosen, candidates in rows
        if n_chosen < len(candidates) and is_heldout(workflow.pk, task_id)
    )


def seed_similarity_answers(
    workflow: Workflow, heldout_target: int, seed: int = 0, *, volunteers: int = 8, max_answers: int = 5000
) -> int:
    """Simulated volunteers (hit rate 0.9, false alarms 0.03 on the hidden classes, as
    `simulate_similarity_votes`) answer tasks until `heldout_target` scored held-out answers exist;
    answers go through the same service as the web page. Returns the number of answers added."""
    import random
    import uuid

    from core.models import Participant
    from mlcore.galaxies import simulate_answer
    from similarity.selection import next_task
    from similarity.services import record_similarity_vote
    from similarity.training import is_heldout

    have = scored_heldout_answers(workflow)
    if have >= heldout_target:
        return 0
    classes = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "truth_subtype"))
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    people = [
        Participant.objects.get_or_create(kind=Participant.ANONYMOUS, session_key=f"demo-similar-{seed}-{i}")[
            0
        ]
        for i in range(volunteers)
    ]
    added = 0
    while have < heldout_target and added < max_answers:
        volunteer = people[added % len(people)]
        task = next_task(workflow, volunteer, rng)
        if task is None:
            break
        positions = simulate_answer(
            classes.get(task.comparison_id, ""), [classes.get(c, "") for c in task.candidates], np_rng
        )
        chosen = [task.candidates[p] for p in positions]
        result = record_similarity_vote(
            task=task,
            participant=volunteer,
            chosen=chosen,
            none_similar=not chosen,
            idempotency_key=uuid.uuid4(),
            source="simulated",
            trusted=True,
        )
        added += result.created
        if result.created and 0 < len(chosen) < len(task.candidates) and is_heldout(workflow.pk, task.pk):
            have += 1
    return added
