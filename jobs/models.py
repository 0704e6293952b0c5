"""The background job: one row per piece of background work, whatever its kind."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def job_upload_path(instance, filename):
    return f"jobs/{instance.project_id}/{instance.pk}/{filename}"


class Job(models.Model):
    """A background job: its state and progress live here, not in a Celery result backend.

    It doubles as the outbox: `dispatched_at` stays empty until the broker accepted the
    message, and a periodic sweep re-sends jobs that are queued but never dispatched.
    """

    TRAIN, SCORE, AGGREGATE, EXPORT, INGEST, RETIREMENT, EMBED = (
        "train",
        "score",
        "aggregate",
        "export",
        "ingest",
        "retirement",
        "embed",
    )
    KINDS = [
        (TRAIN, "Training round"),
        (SCORE, "Scoring"),
        (AGGREGATE, "Aggregation"),
        (EXPORT, "Export"),
        (INGEST, "Ingestion"),
        (RETIREMENT, "Retirement re-evaluation"),
        (EMBED, "Embedding round"),
    ]
    QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
    STATUSES = [(QUEUED, "Queued"), (RUNNING, "Running"), (SUCCEEDED, "Succeeded"), (FAILED, "Failed")]
    OPEN = (QUEUED, RUNNING)

    project = models.ForeignKey("core.Project", on_delete=models.CASCADE, related_name="jobs")
    workflow = models.ForeignKey(
        "core.Workflow", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=20, choices=KINDS)
    status = models.CharField(max_length=10, choices=STATUSES, default=QUEUED)
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1")
    message = models.CharField(max_length=300, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result = models.FileField(upload_to=job_upload_path, max_length=300, blank=True)
    model_version = models.ForeignKey(
        "core.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "labeling_job"
        constraints = [
            # At most one training (or embedding) round queued or running per workflow:
            # extra triggers coalesce into the existing one.
            models.UniqueConstraint(
                fields=["workflow", "kind"],
                condition=Q(status__in=["queued", "running"], kind__in=["train", "embed"]),
                name="job_one_open_round_per_workflow",
            )
        ]
        indexes = [models.Index(fields=["status", "dispatched_at"], name="job_outbox")]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    @property
    def is_open(self):
        return self.status in (self.QUEUED, self.RUNNING)
