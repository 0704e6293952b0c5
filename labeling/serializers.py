"""REST API serializers (issue 8). Read-only views of the data model, with privacy built in:
participants appear as the project's pseudonym, panel worker ids only to owners, and no
emails, user names or IP addresses anywhere. Serializers that need the project or the
requester's role read them from the context (`project`, `role`), set by the project-scoped views.
"""

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.models import ModelVersion, Project, Subject, SubjectSet, Workflow
from core.permissions import can_see_worker_ids
from jobs.models import Job
from labeling import exports
from labeling.models import ParticipantSkill, Vote


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in the project.")

    class Meta:
        model = Project
        fields = ["id", "slug", "name", "description", "is_public", "created_at", "role"]

    @extend_schema_field(serializers.ChoiceField(choices=["owner", "collaborator", "viewer"]))
    def get_role(self, obj) -> str:
        request = self.context.get("request")
        return obj.role_of(request.user) if request else ""


class WorkflowSerializer(serializers.ModelSerializer):
    active_model_version = serializers.IntegerField(
        source="active_model.version", default=None, read_only=True, help_text="Version of the active model."
    )

    class Meta:
        model = Workflow
        fields = [
            "id", "slug", "name", "kind", "question", "answers", "is_active", "retirement_rule",
            "retirement_limit", "swap_prior", "swap_p_low", "swap_p_high", "min_votes", "max_votes",
            "consensus_fraction", "acquisition_strategy", "active_model", "active_model_version", "created_at",
        ]  # fmt: skip


class SubjectSetSerializer(serializers.ModelSerializer):
    n_subjects = serializers.IntegerField(read_only=True, help_text="Subjects in the set.")

    class Meta:
        model = SubjectSet
        fields = ["id", "name", "workflows", "n_subjects", "created_at"]


class SubjectSerializer(serializers.ModelSerializer):
    workflow_slug = serializers.SlugRelatedField(source="workflow", slug_field="slug", read_only=True)
    label = serializers.SerializerMethodField(
        help_text="Gold label if any, else the crowd's label once decided (same rule as the labels export)."
    )
    label_source = serializers.SerializerMethodField(help_text="gold, crowd, or empty while undecided.")
    n_real = serializers.SerializerMethodField()
    n_bogus = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField(help_text="URLs of the rendered PNGs by role.")
    model_version = serializers.SerializerMethodField(help_text="Active model version behind model_score.")

    class Meta:
        model = Subject
        fields = [
            "id", "external_id", "object_id", "workflow", "workflow_slug", "subject_set", "source", "metadata",
            "status", "retired_reason", "retired_at", "needs_review", "vote_count", "n_real", "n_bogus",
            "answer_counts", "p_real", "aggregation_method", "label", "label_source", "gold_label",
            "gold_subtype", "model_score", "model_uncertainty", "model_version", "is_holdout", "images",
            "created_at",
        ]  # fmt: skip

    def _label(self, obj):
        return exports.label_of(obj.gold_label, bool(getattr(obj, "decided", False)), obj.p_real)

    def get_label(self, obj) -> str:
        return self._label(obj)[0]

    def get_label_source(self, obj) -> str:
        return self._label(obj)[1]

    def get_n_real(self, obj) -> int:
        return int((obj.answer_counts or {}).get(Subject.REAL, 0))

    def get_n_bogus(self, obj) -> int:
        return int((obj.answer_counts or {}).get(Subject.BOGUS, 0))

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string", "format": "uri"}})
    def get_images(self, obj) -> dict:
        request = self.context.get("request")
        urls = {}
        for role in obj.images or {}:
            url = obj.image_url(role)
            urls[role] = request.build_absolute_uri(url) if request and url else url
        return urls

    @extend_schema_field(OpenApiTypes.INT)
    def get_model_version(self, obj):
        wf = obj.workflow
        if obj.model_score is None or wf is None or wf.active_model_id is None:
            return None
        return wf.active_model.version


class _ParticipantFields(serializers.Serializer):
    """participant (pseudonym), participant_kind, and worker_id for owners."""

    participant = serializers.SerializerMethodField(help_text="Pseudonym: stable within the project.")
    participant_kind = serializers.CharField(source="participant.kind", read_only=True)
    worker_id = serializers.SerializerMethodField(help_text="Panel worker id; owners only (null otherwise).")

    def get_participant(self, obj) -> str:
        cache = self.context.setdefault("_pseudonyms", {})
        pid = obj.participant_id
        if pid not in cache:
            cache[pid] = self.context["project"].pseudonym(pid)
        return cache[pid]

    @extend_schema_field(OpenApiTypes.STR)
    def get_worker_id(self, obj):
        if not can_see_worker_ids(self.context.get("role")):
            return None
        return obj.participant.external_id or None


class VoteSerializer(_ParticipantFields, serializers.ModelSerializer):
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)
    subject_external_id = serializers.CharField(source="subject.external_id", read_only=True)
    gold = serializers.BooleanField(source="was_gold", read_only=True)
    late = serializers.BooleanField(source="subject_was_retired", read_only=True)

    class Meta:
        model = Vote
        fields = [
            "id", "participant", "participant_kind", "worker_id", "workflow", "workflow_slug", "subject",
            "subject_external_id", "answer", "started_at", "finished_at", "created_at", "gold", "gold_correct",
            "late", "source", "user_agent", "viewport",
        ]  # fmt: skip


class SimilarityVoteSerializer(_ParticipantFields, serializers.Serializer):
    id = serializers.IntegerField()
    workflow = serializers.IntegerField(source="workflow_id")
    task = serializers.IntegerField(source="task_id")
    comparison = serializers.IntegerField(source="task.comparison_id", help_text="Comparison subject id.")
    candidates = serializers.ListField(
        child=serializers.IntegerField(),
        source="task.candidates",
        help_text="Subject ids shown, in tile order.",
    )
    chosen = serializers.ListField(
        child=serializers.IntegerField(), help_text="Subject ids chosen as similar."
    )
    none_similar = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    source = serializers.CharField()
    user_agent = serializers.CharField()
    viewport = serializers.CharField()


class ModelVersionSerializer(serializers.ModelSerializer):
    artifact_url = serializers.SerializerMethodField(
        help_text="Download URL of the checkpoint (null if none)."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id", "workflow", "kind", "version", "status", "metrics", "config", "n_train", "duration_s", "device",
            "artifact_sha256", "artifact_url", "created_at", "promoted_at",
        ]  # fmt: skip

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_artifact_url(self, obj):
        if not obj.artifact:
            return None
        url = reverse("api_model_version_artifact", args=[self.context["project"].slug, obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class SkillSerializer(_ParticipantFields, serializers.ModelSerializer):
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)

    class Meta:
        model = ParticipantSkill
        fields = [
            "participant", "participant_kind", "worker_id", "workflow", "workflow_slug", "n_votes", "n_gold",
            "n_gold_correct", "p_l", "p_d", "confusion", "updated_at",
        ]  # fmt: skip


class ExportJobSerializer(serializers.ModelSerializer):
    export = serializers.CharField(
        source="params.kind", read_only=True, help_text="votes, labels, bundle, similarity"
    )
    format = serializers.CharField(source="params.format", read_only=True)
    workflow_slug = serializers.SlugRelatedField(source="workflow", slug_field="slug", read_only=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField(help_text="Set once the export succeeded.")

    class Meta:
        model = Job
        fields = [
            "id", "export", "format", "workflow", "workflow_slug", "status", "progress", "message", "error",
            "created_at", "started_at", "finished_at", "url", "download_url",
        ]  # fmt: skip

    def _absolute(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    @extend_schema_field(serializers.URLField())
    def get_url(self, obj) -> str:
        return self._absolute(reverse("api_export_detail", args=[obj.project.slug, obj.pk]))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, obj):
        if obj.status != Job.SUCCEEDED or not obj.result:
            return None
        return self._absolute(reverse("api_export_download", args=[obj.project.slug, obj.pk]))


class ExportRequestSerializer(serializers.Serializer):
    export = serializers.ChoiceField(choices=list(exports.FORMATS), help_text="What to export.")
    format = serializers.ChoiceField(
        choices=sorted({f for formats in exports.FORMATS.values() for f in formats}),
        help_text="votes: csv, jsonl, parquet; labels: csv, parquet, fits, ecsv; bundle and similarity: zip.",
    )
    workflow = serializers.IntegerField(
        required=False, allow_null=True, help_text="Workflow id (default: all)."
    )
    split = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        help_text='Training bundle split fractions, e.g. {"train": 0.8, "validation": 0.1, "test": 0.1}.',
    )


class UploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        allow_empty=False,
        help_text="Avro, Parquet, FITS, .npy/.npz, PNG/JPEG files.",
    )
    workflow = serializers.IntegerField(help_text="Workflow id that will show the subjects.")
    subject_set = serializers.CharField(
        required=False, allow_blank=True, help_text="Subject set name (optional)."
    )


class IngestErrorSerializer(serializers.Serializer):
    file = serializers.CharField()
    error = serializers.CharField()


class IngestJobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    ingested = serializers.SerializerMethodField()
    duplicates = serializers.SerializerMethodField()
    failed = serializers.SerializerMethodField()
    errors = serializers.SerializerMethodField()
    subject_ids = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "url", "status", "progress", "message", "error", "created_at", "finished_at",
            "ingested", "duplicates", "failed", "errors", "subject_ids",
        ]  # fmt: skip

    def _result(self, obj) -> dict:
        return (obj.params or {}).get("result") or {}

    def get_url(self, obj) -> str:
        path = reverse("api_ingest_job", args=[obj.project.slug, obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_ingested(self, obj) -> int | None:
        return self._result(obj).get("ingested")

    def get_duplicates(self, obj) -> int | None:
        return self._result(obj).get("duplicates")

    def get_failed(self, obj) -> int | None:
        return self._result(obj).get("failed")

    @extend_schema_field(IngestErrorSerializer(many=True))
    def get_errors(self, obj) -> list:
        return self._result(obj).get("errors", [])

    def get_subject_ids(self, obj) -> list[int]:
        return self._result(obj).get("subject_ids", [])


class VoteInSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    answer = serializers.CharField(max_length=30)
    idempotency_key = serializers.UUIDField()
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    finished_at = serializers.DateTimeField(required=False, allow_null=True)
    viewport = serializers.CharField(required=False, allow_blank=True, max_length=40)


class VoteOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    answer = serializers.CharField()
    idempotency_key = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    late = serializers.BooleanField(help_text="The subject had already retired (the vote is kept).")
    created = serializers.BooleanField(help_text="False when the idempotency key was seen before.")
    feedback = serializers.DictField(allow_null=True, help_text="Expert answer after a gold subject.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
