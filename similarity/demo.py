"""Demo data for the similarity workflow: synthetic galaxy and nebula cutouts (mlcore.galaxies).

`seed_similarity_demo(project)` is called by the demo seeding (`make demo`). It is idempotent:
subjects already present are not created again, and the workflow's settings are left as the
owner set them.
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
    round is queued: self-supervised pretraining on the cutouts, so search works before any answer.
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
