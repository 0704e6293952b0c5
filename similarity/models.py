"""Similarity tasks ("which of these 15 images are similar?"), their votes, and per-pair tallies.

Invariants are database constraints: one vote per (task, participant); a vote is either
"none similar" with nothing chosen or has 1–15 chosen; a pair is never chosen more often
than it was shown; a check task's check candidate is its own comparison.
"""

import math
import uuid

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from core.models import ModelVersion, Participant, Subject, Workflow

N_CANDIDATES = 15


class SimilarityTask(models.Model):
    RANDOM, EMBEDDING = "random", "embedding"
    STRATEGIES = [(RANDOM, "Random (no embedding yet)"), (EMBEDDING, "Mixed ranks of the embedding")]

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="similarity_tasks")
    comparison = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="similarity_tasks")
    # The 15 candidate subject ids in the order they are shown (tile 1 first).
    candidates = models.JSONField(default=list)
    # Why each candidate was picked ("nearest", "uncertain", "mid", "random"), same order.
    candidate_sources = models.JSONField(default=list, blank=True)
    strategy = models.CharField(max_length=20, choices=STRATEGIES, default=RANDOM)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="similarity_tasks"
    )
    n_votes = models.PositiveIntegerField(default=0)
    retired = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    # A check task of a paid assignment shows the comparison itself as one of the candidates: anyone
    # paying attention chooses it. Never served to volunteers, never in pair counts, training data or
    # exports (similarity.selection, services, training, exporters); null for every ordinary task.
    check_candidate = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["workflow", "retired", "created_at"], name="simtask_open")]
        constraints = [
            models.CheckConstraint(
                condition=Q(check_candidate__isnull=True) | Q(check_candidate=F("comparison")),
                name="simtask_check_is_comparison",
            )
        ]

    def __str__(self):
        return f"task {self.pk}: {self.comparison_id} vs {len(self.candidates)}"


class SimilarityVote(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="similarity_votes")
    task = models.ForeignKey(SimilarityTask, on_delete=models.CASCADE, related_name="votes")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="similarity_votes")
    # Chosen candidate subject ids, sorted; empty means "no images are similar".
    chosen = models.JSONField(default=list, blank=True)
    n_chosen = models.PositiveSmallIntegerField(default=0)
    none_similar = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    idempotency_key = models.UUIDField(unique=True, default=uuid.uuid4)
    user_agent = models.CharField(max_length=400, blank=True)
    viewport = models.CharField(max_length=40, blank=True)
    source = models.CharField(max_length=20, default="web", help_text="web, api, simulated")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "participant"], name="simvote_unique_per_participant"),
            models.CheckConstraint(
                condition=Q(none_similar=True, n_chosen=0)
                | Q(none_similar=False, n_chosen__gte=1, n_chosen__lte=N_CANDIDATES),
                name="simvote_none_xor_chosen",
            ),
        ]
        indexes = [models.Index(fields=["participant", "workflow"], name="simvote_participant_wf")]

    def __str__(self):
        return f"{self.participant_id} → task {self.task_id}: {'none' if self.none_similar else self.chosen}"


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class PairStat(models.Model):
    """How often `candidate` was shown next to `comparison` and chosen as similar."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="pair_stats")
    comparison = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    candidate = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="+")
    shown = models.PositiveIntegerField(default=0)
    chosen = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "comparison", "candidate"], name="pairstat_unique"),
            models.CheckConstraint(condition=Q(chosen__lte=F("shown")), name="pairstat_chosen_le_shown"),
        ]

    def __str__(self):
        return f"{self.comparison_id}~{self.candidate_id}: {self.chosen}/{self.shown}"

    @property
    def rate(self) -> float | None:
        return self.chosen / self.shown if self.shown else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.chosen, self.shown)
