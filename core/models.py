"""The core of Skyvote's data model.

Project → Workflow → SubjectSet → Subject; Participant; ModelVersion; API tokens. Votes, jobs and
paid-panel batches live in their own apps and point here. Invariants are database constraints
(Zulip style), not just Python checks. Tables keep their original `labeling_*` names: the models
moved here from the `labeling` app without touching the database.
"""

import hashlib
import hmac

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from core import permissions as roles


def _new_salt() -> str:
    return get_random_string(32)


class Project(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects"
    )
    # Pseudonyms of participants are HMAC(salt, participant id): stable within a project,
    # different between projects.
    pseudonym_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    is_public = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_project"

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("labeling:project_dashboard", args=[self.slug])

    def pseudonym(self, participant_id: int) -> str:
        digest = hmac.new(
            self.pseudonym_salt.encode(), str(participant_id).encode(), hashlib.sha256
        ).hexdigest()
        return "v-" + digest[:12]

    def role_of(self, user) -> str | None:
        """'owner', 'collaborator', 'viewer', 'expert' or None."""
        if not getattr(user, "is_authenticated", False):
            return None
        if user.is_staff or user.pk == self.owner_id:
            return roles.OWNER
        membership = self.memberships.filter(user=user).first()
        return membership.role if membership else None


class ProjectMembership(models.Model):
    # The role names and their sets live in core.permissions; these aliases keep ProjectMembership.OWNER etc.
    OWNER, COLLABORATOR, VIEWER, EXPERT = roles.OWNER, roles.COLLABORATOR, roles.VIEWER, roles.EXPERT
    ROLES = roles.ROLE_CHOICES
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=ROLES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_projectmembership"
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]

    def __str__(self):
        return f"{self.user} is {self.role} of {self.project}"


def default_answers():
    return ["real", "bogus"]


def default_gold_schedule():
    # Zooniverse's Designator default: 40% gold for a volunteer's first 20 subjects,
    # 30% up to 40, 20% up to 60, then 10%. Pairs of (seen fewer than N, share); None = rest.
    return [[20, 0.4], [40, 0.3], [60, 0.2], [None, 0.1]]


class Workflow(models.Model):
    REAL_BOGUS, SIMILARITY = "real_bogus", "similarity"
    KINDS = [(REAL_BOGUS, "Real or bogus?"), (SIMILARITY, "Which images are similar?")]
    RULE_COUNT, RULE_SWAP, RULE_CONSENSUS = "count", "swap", "consensus"
    RULES = [
        (RULE_COUNT, "After N votes"),
        (RULE_SWAP, "SWAP probability thresholds"),
        (RULE_CONSENSUS, "Consensus fraction"),
    ]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    slug = models.SlugField()
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=KINDS, default=REAL_BOGUS)
    question = models.CharField(max_length=300, default="Is this a real astrophysical transient?")
    answers = models.JSONField(default=default_answers)
    is_active = models.BooleanField(default=True)

    # Retirement: after N votes (count), at SWAP thresholds on P(real), or at a consensus fraction.
    retirement_rule = models.CharField(max_length=20, choices=RULES, default=RULE_COUNT)
    retirement_limit = models.PositiveIntegerField(default=5, help_text="Votes to retire (count rule).")
    swap_prior = models.FloatField(default=0.5)
    swap_p_low = models.FloatField(default=0.01)
    swap_p_high = models.FloatField(default=0.99)
    min_votes = models.PositiveIntegerField(default=2)
    max_votes = models.PositiveIntegerField(default=20)
    consensus_fraction = models.FloatField(default=0.8)

    # Selection: gold subjects on a schedule, an exploration share, the active model's ranking.
    gold_schedule = models.JSONField(default=default_gold_schedule)
    exploration_share = models.FloatField(default=0.1)
    acquisition_strategy = models.CharField(max_length=30, default="entropy")
    train_every = models.PositiveIntegerField(
        default=50, help_text="Start a training round after this many new decided labels."
    )
    labels_at_last_round = models.PositiveIntegerField(default=0)
    active_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_workflow"
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="workflow_unique_slug")]

    def __str__(self):
        return f"{self.project.slug}/{self.slug}"

    def get_absolute_url(self):
        if self.kind == self.SIMILARITY:
            return reverse("similarity:classify", args=[self.project.slug, self.slug])
        return reverse("labeling:classify", args=[self.project.slug, self.slug])

    def gold_share_for(self, n_seen: int) -> float:
        for limit, share in self.gold_schedule:
            if limit is None or n_seen < limit:
                return float(share)
        return 0.0


class SubjectSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="subject_sets")
    workflows = models.ManyToManyField(Workflow, related_name="subject_sets", blank=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_subjectset"

    def __str__(self):
        return self.name


def subject_upload_path(instance, filename):
    return f"subjects/{instance.project_id}/{filename}"


class Subject(models.Model):
    ACTIVE, RETIRED = "active", "retired"
    STATUSES = [(ACTIVE, "Active"), (RETIRED, "Retired")]
    REAL, BOGUS = "real", "bogus"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="subjects")
    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="subjects",
        null=True,
        blank=True,
        help_text="The workflow that shows this subject.",
    )
    subject_set = models.ForeignKey(
        SubjectSet, on_delete=models.CASCADE, related_name="subjects", null=True, blank=True
    )
    external_id = models.CharField(max_length=100, help_text="e.g. the ZTF candid")
    object_id = models.CharField(max_length=100, blank=True, db_index=True)
    source = models.CharField(
        max_length=40, blank=True, help_text="avro, parquet, fits, npy, image, synthetic"
    )
    metadata = models.JSONField(default=dict, blank=True)
    # Arrays: float32 .npy with NaNs kept; (3, H, W) science/reference/difference triplet,
    # or (H, W) / (H, W, 3) single images for similarity.
    data = models.FileField(upload_to=subject_upload_path, max_length=300, blank=True)
    # Rendered PNGs by role ("science", "reference", "difference", or "image"): storage names.
    images = models.JSONField(default=dict, blank=True)
    render_version = models.PositiveIntegerField(default=0)

    # Ground truth of synthetic subjects: stored, never sent to volunteers.
    truth_label = models.CharField(max_length=20, blank=True)
    truth_subtype = models.CharField(max_length=40, blank=True)

    # Gold standard: an expert's label, for feedback to volunteers and for measuring them.
    gold_label = models.CharField(max_length=20, blank=True, db_index=True)
    gold_subtype = models.CharField(max_length=40, blank=True)
    gold_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_holdout = models.BooleanField(default=False, help_text="Held out for model evaluation.")

    status = models.CharField(max_length=10, choices=STATUSES, default=ACTIVE)
    retired_reason = models.CharField(max_length=60, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    needs_review = models.BooleanField(default=False, help_text="Reached max votes undecided.")
    vote_count = models.PositiveIntegerField(default=0)
    answer_counts = models.JSONField(default=dict, blank=True)

    # Aggregated belief: P(real) and how it was computed.
    p_real = models.FloatField(null=True, blank=True)
    aggregation_method = models.CharField(max_length=30, blank=True)

    # Active model's opinion; never shown to volunteers before they answer.
    model_score = models.FloatField(null=True, blank=True)
    model_uncertainty = models.FloatField(null=True, blank=True)
    acquisition_score = models.FloatField(null=True, blank=True)
    # Selection: higher first. Random until a model ranks the pool.
    priority = models.FloatField(default=0.0)
    random_key = models.FloatField(default=0.0)

    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_subject"
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="subject_unique_external_id")
        ]
        indexes = [
            # The selector walks these from one end and stops after a few rows; gold_label is in them so
            # the walk needs no table lookups (labeling/selection.py, bench/selection.py).
            models.Index(fields=["workflow", "status", "gold_label", "priority"], name="subject_pick_ranked"),
            models.Index(
                fields=["workflow", "status", "gold_label", "random_key"], name="subject_pick_random"
            ),
        ]

    def __str__(self):
        return self.external_id

    @property
    def is_retired(self):
        return self.status == self.RETIRED

    def image_url(self, role: str) -> str | None:
        from django.core.files.storage import default_storage

        name = self.images.get(role)
        return default_storage.url(name) if name else None


class Participant(models.Model):
    USER, ANONYMOUS, WORKER = "user", "anonymous", "worker"
    KINDS = [(USER, "Registered user"), (ANONYMOUS, "Anonymous browser"), (WORKER, "Panel worker")]

    kind = models.CharField(max_length=10, choices=KINDS)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="participant"
    )
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    # Panel worker id (e.g. PROLIFIC_PID); visible to project owners only.
    external_id = models.CharField(max_length=200, blank=True, db_index=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_from"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_participant"

    def __str__(self):
        return f"{self.kind}:{self.pk}"


def artifact_upload_path(instance, filename):
    return f"models/{instance.workflow_id}/{filename}"


class ModelVersion(models.Model):
    """A trained model (real/bogus classifier or similarity embedding)."""

    CLASSIFIER, EMBEDDING = "classifier", "embedding"
    CANDIDATE, ACTIVE, REJECTED, FAILED, RETIRED = "candidate", "active", "rejected", "failed", "retired"
    STATUSES = [
        (CANDIDATE, "Candidate"),
        (ACTIVE, "Active"),
        (REJECTED, "Not promoted"),
        (FAILED, "Failed"),
        (RETIRED, "Superseded"),
    ]
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=20, default=CLASSIFIER)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=STATUSES, default=CANDIDATE)
    artifact = models.FileField(upload_to=artifact_upload_path, max_length=300, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    n_train = models.PositiveIntegerField(default=0)
    duration_s = models.FloatField(default=0.0)
    device = models.CharField(max_length=60, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labeling_modelversion"
        constraints = [
            models.UniqueConstraint(fields=["workflow", "kind", "version"], name="modelversion_unique")
        ]

    def __str__(self):
        return f"{self.workflow} {self.kind} v{self.version}"


class ApiToken(models.Model):
    """Per-user API token: shown once, stored as a SHA-256 hash, revocable."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labeling_apitoken"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"
