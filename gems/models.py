"""Anomaly scores per subject and model version, and the team's relevance ratings of gem candidates."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.models import ModelVersion, Subject, Workflow


class AnomalyRun(models.Model):
    """One computation of weirdness over a workflow's whole pool (retired and unretired). Readers use
    the latest succeeded run, so a run that fails leaves the previous scores in use."""

    RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
    STATUSES = [(RUNNING, "Running"), (SUCCEEDED, "Succeeded"), (FAILED, "Failed")]

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="anomaly_runs")
    # The classifier whose penultimate layer gave the features; null when there was none.
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="anomaly_runs"
    )
    status = models.CharField(max_length=10, choices=STATUSES, default=RUNNING)
    # The anomaly job that computes it: a job whose worker dies leaves its run to be marked failed.
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    methods = models.JSONField(default=list, blank=True)
    # Which features went in ("classifier", "embedding", "cutout statistics") and their dimension.
    features = models.JSONField(default=dict, blank=True)
    # The run's feature matrix (reduced), in private storage: the ranking's relevance regressor reads it.
    feature_file = models.CharField(max_length=300, blank=True)
    n_subjects = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workflow", "status", "-finished_at"], name="anomalyrun_latest")]

    def __str__(self):
        return f"anomaly run {self.pk} of {self.workflow_id} ({self.status})"


class AnomalyScore(models.Model):
    """A subject's weirdness by each method (0..1, higher = weirder) in one run. `gem_score` and
    `gem_rank` are the gem ranking as of the end of the run (weirdness, flags, disagreement and the
    ratings then): the selector's gem slots read them."""

    run = models.ForeignKey(AnomalyRun, on_delete=models.CASCADE, related_name="scores")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="anomaly_scores")
    row = models.PositiveIntegerField(help_text="Row of the subject in the run's feature matrix.")
    iforest = models.FloatField(null=True, blank=True)
    knn = models.FloatField(null=True, blank=True)
    urf = models.FloatField(null=True, blank=True)
    combined = models.FloatField()
    gem_score = models.FloatField(default=0.0)
    gem_rank = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "subject"], name="anomalyscore_unique_subject")]
        indexes = [models.Index(fields=["run", "gem_rank"], name="anomalyscore_rank")]

    def __str__(self):
        return f"{self.subject_id} in run {self.run_id}: {self.combined:.3f}"


class GemRating(models.Model):
    """How relevant a team member found a gem candidate (0 = not interesting … 5 = a real find)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="gem_ratings")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="gem_ratings")
    rated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gem_ratings"
    )
    rating = models.PositiveSmallIntegerField(validators=[MinValueValidator(0), MaxValueValidator(5)])
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "rated_by"], name="gemrating_unique_rater"),
            models.CheckConstraint(condition=Q(rating__gte=0, rating__lte=5), name="gemrating_0_to_5"),
        ]

    def __str__(self):
        return f"{self.rated_by_id} rated {self.subject_id}: {self.rating}"
