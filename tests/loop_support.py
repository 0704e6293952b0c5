"""Helpers for the learning-loop tests: a synthetic pool with labels, gold and a held-out set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.ingest import add_subject
from core.models import Subject
from mlcore.synth import generate_triplets

# Tiny rounds: a few seconds of CPU at most.
TINY_LOOP = {
    "train_max_epochs": 2,
    "train_time_budget_s": 20.0,
    "min_train_labels": 10,
    "mc_samples": 4,
    "score_chunk": 64,
    "score_batch_size": 64,
    "write_chunk": 50,
    "warm_start": True,
    # Tiny held-out sets: the promotion rule's minimum (200 by default) is tested on its own.
    "min_heldout": 4,
    "promote_bootstrap": 200,
}


TINY_JOBS = {"progress_interval_s": 0.0, "heartbeat_stale_s": 120.0, "max_attempts": 2}


def tiny_loop_settings(settings, tmp_path, **overrides) -> dict:
    settings.SKYVOTE_JOBS = {**TINY_JOBS, **{k: v for k, v in overrides.items() if k in TINY_JOBS}}
    overrides = {k: v for k, v in overrides.items() if k not in TINY_JOBS}
    settings.SKYVOTE_LOOP = {**TINY_LOOP, "cache_dir": str(tmp_path / "cache"), **overrides}
    return settings.SKYVOTE_LOOP


@dataclass
class Pool:
    subjects: list[Subject]
    truth: np.ndarray  # 1 = real
    labeled: list[int]
    gold: list[int]
    unlabeled: list[int]


def make_pool(project, workflow, n: int = 160, n_labeled: int = 60, n_gold: int = 30, seed: int = 0) -> Pool:
    """n synthetic subjects (arrays in storage, no PNGs); n_labeled retired with crowd labels from the
    truth, n_gold gold subjects (the held-out set), the rest unlabeled and active."""
    batch = generate_triplets(n, seed=seed)
    subjects = []
    for i in range(n):
        subject, _ = add_subject(
            project=project,
            workflow=workflow,
            subject_set=None,
            external_id=f"loop-{seed}-{i}",
            array=batch.images[i],
            metadata={},
            source="synthetic",
            truth_label="real" if batch.labels[i] else "bogus",
            truth_subtype=batch.subtypes[i],
            render=False,
        )
        subjects.append(subject)
    truth = batch.labels.astype(np.int8)
    ids = [s.pk for s in subjects]
    labeled, gold, unlabeled = ids[:n_labeled], ids[n_labeled : n_labeled + n_gold], ids[n_labeled + n_gold :]
    label_subjects(labeled, truth[:n_labeled])
    for pk, y in zip(gold, truth[n_labeled : n_labeled + n_gold], strict=True):
        Subject.objects.filter(pk=pk).update(gold_label="real" if y else "bogus")
    return Pool(subjects, truth, labeled, gold, unlabeled)


def label_subjects(ids, truth) -> None:
    """Retire subjects as decided by the crowd, with P(real) agreeing with the truth."""
    for pk, y in zip(ids, truth, strict=True):
        Subject.objects.filter(pk=pk).update(
            status=Subject.RETIRED,
            vote_count=3,
            p_real=0.95 if y else 0.05,
            answer_counts={"real": 3} if y else {"bogus": 3},
            retired_reason="test",
        )


def ranking(workflow) -> list[int]:
    return list(
        Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE, gold_label="")
        .order_by("-priority", "pk")
        .values_list("pk", flat=True)
    )
