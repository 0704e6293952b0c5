"""Paid panels: batches of task-link assignments (Prolific or any panel)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import Participant, Workflow


class Batch(models.Model):
    """A paid-panel batch: N assignments of M tasks each, reached by task links."""

    OPEN, CLOSED = "open", "closed"
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="batches")
    name = models.CharField(max_length=200)
    tasks_per_assignment = models.PositiveIntegerField(default=50)
    n_assignments = models.PositiveIntegerField(default=10)
    gold_share = models.FloatField(default=0.1)
    expires_at = models.DateTimeField(null=True, blank=True)
    instructions = models.TextField(blank=True)
    payment_note = models.CharField(max_length=300, blank=True)
    return_url_template = models.CharField(
        max_length=500, blank=True, help_text="e.g. https://app.prolific.com/submissions/complete?cc={code}"
    )
    status = models.CharField(max_length=10, default=OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_batch"

    def __str__(self):
        return self.name


class Assignment(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="assignments")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="assignments")
    worker_id = models.CharField(max_length=200)
    study_id = models.CharField(max_length=200, blank=True)
    session_id = models.CharField(max_length=200, blank=True)
    # The assignment's items in order, whatever one task of the workflow's kind is: subject ids for
    # real/bogus, similarity task ids for similarity (core.tasklink_kinds; the name predates the latter).
    subject_ids = models.JSONField(default=list, help_text="The fixed list of subjects, in order.")
    n_done = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    review = models.CharField(max_length=20, blank=True, help_text="approved / rejected by the owner")
    # The public study link and a worker id are not secret: reopening the link resumes only in the browser
    # that started (its cookie holds the key; only the hash is stored, so a database leak opens nothing).
    resume_key_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the browser key that may resume from the study link"
    )
    released_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Abandoned: no answer for too long, so the place went back to the batch (votes are kept)",
    )

    class Meta:
        db_table = "labeling_assignment"
        constraints = [
            models.UniqueConstraint(fields=["batch", "worker_id"], name="assignment_unique_worker")
        ]

    def __str__(self):
        return f"{self.batch}: {self.worker_id}"
