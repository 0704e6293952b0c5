"""The core of Skyvote's data model.

Project → Workflow → SubjectSet → Subject; Participant; ModelVersion; API tokens. Votes, jobs and
paid-panel batches live in their own apps and point here. Invariants are database constraints
(Zulip style), not just Python checks. Tables keep their original `labeling_*` names: the models
moved here from the `labeling` app without touching the database.
"""

import hashlib
import hmac
import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from core import permissions as roles


def _new_salt() -> str:
    return get_random_string(32)


# Licences for a project's labels, by SPDX id (https://spdx.org/licenses/), with the URL exports cite.
LICENCES = {
    "CC-BY-4.0": ("Creative Commons Attribution 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "CC-BY-SA-4.0": (
        "Creative Commons Attribution-ShareAlike 4.0",
        "https://creativecommons.org/licenses/by-sa/4.0/",
    ),
    "CC-BY-NC-4.0": (
        "Creative Commons Attribution-NonCommercial 4.0",
        "https://creativecommons.org/licenses/by-nc/4.0/",
    ),
    "CC0-1.0": (
        "Creative Commons Zero 1.0 (public domain)",
        "https://creativecommons.org/publicdomain/zero/1.0/",
    ),
    "ODC-By-1.0": ("Open Data Commons Attribution 1.0", "https://opendatacommons.org/licenses/by/1-0/"),
    "ODbL-1.0": (
        "Open Data Commons Open Database License 1.0",
        "https://opendatacommons.org/licenses/odbl/1-0/",
    ),
    "CDLA-Permissive-2.0": (
        "Community Data License Agreement – Permissive 2.0",
        "https://cdla.dev/permissive-2-0/",
    ),
}
LICENCE_CHOICES = [(spdx, f"{name} ({spdx})") for spdx, (name, _url) in LICENCES.items()]
DEFAULT_LICENCE = "CC-BY-4.0"


def cover_upload_path(instance, filename):
    # A random name: the cover of a private project must not be found by guessing.
    from core.storage import random_name

    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return random_name("covers/", suffix[:6])


class CoverStorage(FileSystemStorage):
    """Private storage (no URL) for covers, served by core.views_projects.project_cover, which checks
    who asks. The field keeps one storage for good, so the folder is read from settings.PRIVATE_ROOT
    at every use, as core.storage.private_storage() does, not fixed when the model is loaded."""

    @property
    def base_location(self):
        return settings.PRIVATE_ROOT

    @property
    def location(self):
        return os.path.abspath(self.base_location)


def cover_storage():
    return CoverStorage()


class Project(models.Model):
    DRAFT, LIVE, PAUSED, FINISHED = roles.DRAFT, roles.LIVE, roles.PAUSED, roles.FINISHED
    STATUSES = roles.STATUS_CHOICES

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, help_text="A short description: one or two sentences.")
    long_description = models.TextField(
        blank=True, help_text="Markdown: the science, what volunteers do, who is behind it."
    )
    cover_image = models.ImageField(
        upload_to=cover_upload_path, storage=cover_storage, max_length=300, blank=True
    )
    # Existing projects were all open for votes: they become live; new ones start as drafts (forms, API).
    status = models.CharField(max_length=10, choices=STATUSES, default=LIVE)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    licence = models.CharField(
        max_length=40,
        choices=LICENCE_CHOICES,
        default=DEFAULT_LICENCE,
        help_text="The licence of the project's labels: every export and training bundle carries it.",
    )
    contact = models.CharField(
        max_length=200, blank=True, help_text="Who to contact or cite: a name, an e-mail address or a URL."
    )
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

    @property
    def licence_name(self) -> str:
        return LICENCES.get(self.licence, (self.licence, ""))[0]

    @property
    def licence_url(self) -> str:
        return LICENCES.get(self.licence, ("", ""))[1]

    @property
    def accepts_votes(self) -> bool:
        return roles.vote_refusal(self) is None

    def set_status(self, status: str) -> None:
        """Change the lifecycle state (the caller saves); the time of the change tells which votes
        were in flight when a project was paused (core.permissions.vote_refusal)."""
        if status != self.status:
            self.status = status
            self.status_changed_at = timezone.now()

    def pseudonym(self, participant_id: int) -> str:
        digest = hmac.new(
            self.pseudonym_salt.encode(), str(participant_id).encode(), hashlib.sha256
        ).hexdigest()
        return "v-" + digest[:12]

    def role_of(self, user) -> str | None:
        """'owner', 'scientist', 'viewer', 'expert' or None."""
        if not getattr(user, "is_authenticated", False):
            return None
        # Staff get no role from being staff: only where the deployment chose it (core.permissions).
        if user.pk == self.owner_id or roles.staff_sees_all(user):
            return roles.OWNER
        membership = self.memberships.filter(user=user).first()
        return membership.role if membership else None


class ProjectMembership(models.Model):
    # The role names and their sets live in core.permissions; these aliases keep ProjectMembership.OWNER etc.
    OWNER, SCIENTIST, VIEWER, EXPERT = roles.OWNER, roles.SCIENTIST, roles.VIEWER, roles.EXPERT
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


class Invitation(models.Model):
    """An invitation to join a project, sent to an e-mail address without an account. The link carries
    a signed token naming this row (core.invitations); accepting it once signed in adds the membership."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=20, choices=roles.MEMBERSHIP_ROLE_CHOICES)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self):
        return f"{self.email} invited to {self.project} as {self.role}"


def default_answers():
    # Objects with a stable key, label, keyboard key, help and meaning (core.answers).
    from core.answers import default_answers as objects

    return objects()


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
    # Follow-up questions ("What kind?" after an answer) and their types (core.followups). Retirement
    # also waits for the type where the workflow asks: the type posterior's maximum reaches
    # type_confidence (or max_votes is reached).
    followups = models.JSONField(default=list, blank=True)
    type_retirement = models.BooleanField(
        default=False, help_text="Retire only when the type is decided too (or after max votes)."
    )
    type_confidence = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="A type is decided when its posterior reaches this (0.5 to 1).",
    )
    # The model as one more voter (labeling.aggregation): its calibrated score enters P(real) with the
    # confusion it showed on gold. Labels decided with its help are marked (Subject.decided_with_model)
    # and training leaves them out unless model_helped_training says otherwise.
    model_votes = models.BooleanField(
        default=False, help_text="The active model's calibrated score counts as one more vote."
    )
    model_helped_training = models.BooleanField(
        default=False,
        help_text="Train on labels the model helped decide (off: they are left out, so the model does not "
        "learn its own mistakes).",
    )

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
    # Transfer: the first round fine-tunes from this model (another workflow's, e.g. ZTF's for a
    # Rubin workflow) and trains one from scratch beside it for comparison (loop.services).
    start_from = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The first round fine-tunes from this model instead of starting from scratch.",
    )
    # What the model sees (mlcore.prep.InputSpec): stamps of every survey resampled to one pixel
    # scale and cropped or padded to one size; optionally the difference's uncertainty as a 4th channel.
    model_input_size = models.PositiveSmallIntegerField(
        default=63, help_text="Side of the model's input in pixels."
    )
    model_pixel_scale = models.FloatField(
        default=1.0,
        help_text="Arcseconds per pixel of the model's input; every survey's stamps are resampled to it.",
    )
    model_uncertainty_channel = models.BooleanField(
        default=False, help_text="Give the model the difference image's uncertainty as a fourth channel."
    )
    show_light_curve = models.BooleanField(
        default=True, help_text="Show the subject's light curve beside the cutouts on the classify page."
    )
    # Rare gems (gems app): this share of the volunteer queue goes to the current top gem candidates
    # that few people have seen. Validated here, not by a database check, so a test may route everything.
    gem_share = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of volunteers' subjects drawn from the top rare-gem candidates (0 to 0.5).",
    )
    # Similarity: where each task's comparison image comes from, and how many candidates it shows.
    COMPARE_POOL, COMPARE_SET = "pool", "subject_set"
    COMPARISON_SOURCES = [
        (COMPARE_POOL, "Any subject of the workflow (least compared first)"),
        (COMPARE_SET, "Subjects of one subject set"),
    ]
    comparison_source = models.CharField(max_length=20, choices=COMPARISON_SOURCES, default=COMPARE_POOL)
    comparison_set = models.ForeignKey(
        "SubjectSet",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Similarity: comparison images come from this set (with the 'subject set' source).",
    )
    n_candidates = models.PositiveSmallIntegerField(
        default=15, help_text="Similarity: candidate images shown beside each comparison image."
    )
    # Volunteer-facing content (core.workflow_content): tutorial steps and field-guide entries,
    # Markdown text and an optional image each.
    tutorial = models.JSONField(default=list, blank=True)
    field_guide = models.JSONField(default=list, blank=True)
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

    @property
    def answer_options(self) -> list[dict]:
        """The answers as objects (core.answers), also for workflows that stored plain strings."""
        from core import answers

        return answers.options(self.answers)

    @property
    def answer_keys(self) -> list[str]:
        """The keys votes store, in button order (skip is not one of them)."""
        return [o["key"] for o in self.answer_options]

    def answer_class(self, key: str) -> str:
        """'real', 'bogus' or '' (the answer counts as neither, or is not one of this workflow's)."""
        from core import answers

        return answers.class_map(self.answers).get(key, "")

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
    ZTF, RUBIN = "ztf", "rubin"
    SURVEYS = [(ZTF, "ZTF"), (RUBIN, "Rubin (LSST)")]
    # Which alert stream the subject came from, told by the packet's content; blank for files that
    # are not alerts (FITS, NumPy, images, synthetic data).
    survey = models.CharField(max_length=10, choices=SURVEYS, blank=True, db_index=True)
    schema_version = models.CharField(
        max_length=20, blank=True, help_text="Alert schema version, e.g. 3.3 (ZTF) or 10.0 (Rubin)."
    )
    # Earlier photometry of the object and this detection, oldest first (docs/ingestion.md):
    # [{"mjd", "band", "flux_njy", "flux_err_njy", "mag", "mag_err", "kind", ["current"]}, ...]
    light_curve = models.JSONField(default=list, blank=True)
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
    # The type (core.followups): follow-up answers counted by type key, the type posterior
    # ({type key: probability}; from the counts on each vote, from Dawid–Skene on K classes after a
    # recompute) and the decided type ("" until its maximum reaches the workflow's type_confidence).
    type_counts = models.JSONField(default=dict, blank=True)
    type_posterior = models.JSONField(default=dict, blank=True)
    decided_type = models.CharField(max_length=30, blank=True)
    # P(real) was decided with the model voting (labeling.aggregation): exports say so, training may
    # leave such labels out.
    decided_with_model = models.BooleanField(default=False)

    # Active model's opinion; never shown to volunteers before they answer.
    model_score = models.FloatField(null=True, blank=True)
    model_uncertainty = models.FloatField(null=True, blank=True)
    # The type head's most likely type and its probability (models with a type head only).
    model_type = models.CharField(max_length=30, blank=True)
    model_type_p = models.FloatField(null=True, blank=True)
    acquisition_score = models.FloatField(null=True, blank=True)
    # Selection: higher first. Random until a model ranks the pool.
    priority = models.FloatField(default=0.0)
    random_key = models.FloatField(default=0.0)

    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labeling_subject"
        constraints = [
            # Per subject set, so the same alert can feed two workflows through two sets (core.ingest
            # gives every ingested subject a set).
            models.UniqueConstraint(
                fields=["subject_set", "external_id"], name="subject_unique_external_id_per_set"
            )
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
        """The URL of the PNG of `role`, or None: the access-checked image view (core.views_files),
        signed for a while so panel workers and API clients can load it too, whichever storage it is in."""
        from core.views_files import subject_image_url

        return subject_image_url(self, role)


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
    """Per-user API token: shown once, stored as a SHA-256 hash, revocable, optionally expiring.

    `scope` "read" allows only reading (GET); "write" everything the user's roles allow. Tokens made
    before scopes existed are "write", as they always were (core.permissions.TokenScopeAllows).
    """

    READ, WRITE = roles.TOKEN_READ, roles.TOKEN_WRITE
    SCOPES = roles.TOKEN_SCOPE_CHOICES

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=5, choices=SCOPES, default=WRITE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labeling_apitoken"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class GemFlag(models.Model):
    """A volunteer's "rare gem" flag: this subject looks like none of the field guide's classes.

    It is never an answer: it rides along with a vote (labeling's or similarity's) and is stored by
    core.gems only after that vote was accepted, so a subject nobody served to the volunteer cannot be
    flagged. One flag per person and subject (a second one updates the note). `vote_key` is the
    idempotency key of the vote it came with, which is how the votes exports and API find it.
    """

    NOTE_MAX = 280

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="gem_flags")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="gem_flags")
    # PROTECT, as votes: a volunteer's contributions are records, never deleted with a participant.
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="gem_flags")
    # Plain text, cleaned (core.gems.clean_note); templates escape it wherever it is shown.
    note = models.CharField(max_length=NOTE_MAX, blank=True)
    vote_key = models.UUIDField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "subject", "participant"], name="gemflag_unique_per_participant"
            )
        ]

    def __str__(self):
        return f"{self.participant_id} flagged {self.subject_id}"
