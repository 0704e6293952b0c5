"""REST API serializers of core: projects, workflows, subject sets, rare-gem flags, model versions,
ingest and export jobs. Read-only views of the data model, with privacy built in: participants appear as the
project's pseudonym (`ParticipantFields`, shared by the apps' vote serializers), panel worker ids
only to owners, and no emails, user names or IP addresses anywhere. Serializers that need the
project or the requester's role read them from the context (`project`, `role`), set by the
project-scoped views (core.api.ProjectScopedMixin).
"""

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core import exporters
from core.models import GemFlag, ModelVersion, Project, SubjectSet, Workflow
from core.permissions import can_see_worker_ids
from jobs.models import Job


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in the project.")
    licence_url = serializers.CharField(read_only=True, help_text="The licence's text.")
    has_cover = serializers.SerializerMethodField(help_text="Whether the project has a cover image.")

    class Meta:
        model = Project
        fields = [
            "id", "slug", "name", "description", "long_description", "is_public", "status", "licence",
            "licence_url", "contact", "has_cover", "created_at", "role",
        ]  # fmt: skip

    def get_has_cover(self, obj) -> bool:
        return bool(obj.cover_image)

    @extend_schema_field(serializers.ChoiceField(choices=["owner", "scientist", "viewer"]))
    def get_role(self, obj) -> str:
        request = self.context.get("request")
        return obj.role_of(request.user) if request else ""


class WorkflowSerializer(serializers.ModelSerializer):
    active_model_version = serializers.IntegerField(
        source="active_model.version",
        default=None,
        allow_null=True,
        read_only=True,
        help_text="Version of the active model (null without one).",
    )

    class Meta:
        model = Workflow
        fields = [
            "id", "slug", "name", "kind", "question", "answers", "is_active", "retirement_rule",
            "retirement_limit", "swap_prior", "swap_p_low", "swap_p_high", "min_votes", "max_votes",
            "consensus_fraction", "acquisition_strategy", "active_model", "active_model_version", "created_at",
            "show_light_curve", "model_input_size", "model_pixel_scale", "model_uncertainty_channel", "start_from",
            "gold_schedule", "exploration_share", "train_every", "comparison_source", "comparison_set",
            "n_candidates", "tutorial", "field_guide", "followups", "model_votes", "model_helped_training",
        ]  # fmt: skip


class SubjectSetSerializer(serializers.ModelSerializer):
    n_subjects = serializers.IntegerField(read_only=True, help_text="Subjects in the set.")

    class Meta:
        model = SubjectSet
        fields = ["id", "name", "workflows", "n_subjects", "created_at"]


class ParticipantFields(serializers.Serializer):
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

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_worker_id(self, obj):
        if not can_see_worker_ids(self.context.get("role")):
            return None
        return obj.participant.external_id or None


class GemFlagSerializer(ParticipantFields, serializers.ModelSerializer):
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)
    subject_external_id = serializers.CharField(source="subject.external_id", read_only=True)
    note = serializers.CharField(read_only=True, help_text="The volunteer's note: plain text, escape it.")
    vote_key = serializers.UUIDField(
        read_only=True, help_text="Idempotency key of the vote the flag came with (votes and exports)."
    )

    class Meta:
        model = GemFlag
        fields = [
            "id", "participant", "participant_kind", "worker_id", "workflow", "workflow_slug", "subject",
            "subject_external_id", "note", "vote_key", "created_at", "updated_at",
        ]  # fmt: skip


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


class ExportJobSerializer(serializers.ModelSerializer):
    export = serializers.CharField(
        source="params.kind", read_only=True, help_text="What was exported (the request's `export`)."
    )
    format = serializers.CharField(source="params.format", read_only=True)
    workflow_slug = serializers.SlugRelatedField(
        source="workflow",
        slug_field="slug",
        read_only=True,
        allow_null=True,
        help_text="Null: all workflows.",
    )
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
    # Choices come from the exporter registry when the serializer is made (apps register theirs in
    # ready(), after this module may have been imported).
    export = serializers.ChoiceField(choices=[], help_text="What to export.")
    format = serializers.ChoiceField(choices=list(exporters.FORMATS))
    workflow = serializers.IntegerField(
        required=False, allow_null=True, help_text="Workflow id (default: all)."
    )
    split = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        help_text='Training bundle split fractions, e.g. {"train": 0.8, "validation": 0.1, "test": 0.1}.',
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        registered = exporters.exporters()
        self.fields["export"].choices = [found.identifier for found in registered]
        self.fields["format"].choices = sorted({fmt for found in registered for fmt in found.formats})
        self.fields["format"].help_text = "; ".join(
            f"{found.identifier}: {', '.join(found.formats)}" for found in registered
        )


@extend_schema_field({"type": "string", "format": "binary"})
class UploadedFileField(serializers.FileField):
    """A file part of a multipart request: binary in the schema (drf-spectacular documents a FileField
    as the URL a response would carry), so clients and the fuzz test send files, not URLs."""


class UploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        # An empty file goes through to the ingest job, which reports it alone; refusing it here
        # would fail the whole upload.
        child=UploadedFileField(allow_empty_file=True),
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


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
