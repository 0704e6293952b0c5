"""The REST API's core: shared machinery (pagination, the download renderer, project-scoped views
and their filters) and the endpoints of core's models: projects, workflows, subject sets, model
versions, ingestion uploads and exports. Each app adds its own endpoints in its api.py
(labeling: votes, subjects, skills; similarity: similarity votes, search); skyvote/api_urls.py
composes them under /api/ (see docs/api.md).

Authentication: personal API tokens (core.authentication) or the browser session. Every
project-scoped endpoint resolves the project through core.permissions: someone without a role
in the project gets 404, a viewer gets 403 where owners/scientists are needed.
Thin views: the work is in core.ingest and core.exporters.
"""

from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core import exporters
from core.formats import parse_id, parse_time
from core.ingest import IngestError, create_ingest_job
from core.models import GemFlag, ModelVersion, SubjectSet, Workflow
from core.permissions import (
    EXPORT_ROLES,
    WRITE_ROLES,
    HasProjectRole,
    TokenScopeAllows,
    projects_readable_by,
)
from core.serializers import (
    ErrorSerializer,
    ExportJobSerializer,
    ExportRequestSerializer,
    GemFlagSerializer,
    IngestJobSerializer,
    ModelVersionSerializer,
    ProjectSerializer,
    SubjectSetSerializer,
    UploadSerializer,
    WorkflowSerializer,
)
from core.storage import file_response
from jobs.models import Job

# ---------------------------------------------------------------------------------------------
# Shared machinery


class ApiPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class AnyMediaJSONRenderer(JSONRenderer):
    """Lets file downloads accept any Accept header (errors still come back as JSON)."""

    media_type = "*/*"
    format = "json"


def query_time(name: str, value: str, end_of_day: bool = False):
    """An ISO date or date-time query parameter (core.formats.parse_time: naive values are UTC, a
    bare date is its first instant, or its last with `end_of_day`); ValidationError naming it."""
    try:
        return parse_time(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise ValidationError({name: [str(exc)]})


def query_bool(name: str, value: str) -> bool:
    """A boolean query parameter; ValidationError naming it otherwise."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValidationError({name: [f"'{value}' is not true or false."]})


def date_range_params(prefix: str, what: str) -> list[OpenApiParameter]:
    return [
        OpenApiParameter(
            f"{prefix}_after", OpenApiTypes.STR, description=f"{what} on or after (ISO date/date-time)"
        ),
        OpenApiParameter(
            f"{prefix}_before", OpenApiTypes.STR, description=f"{what} on or before (ISO date/date-time)"
        ),
    ]


WORKFLOW_PARAM = OpenApiParameter("workflow", OpenApiTypes.STR, description="Workflow id or slug")


class ProjectScopedMixin:
    """A view under /api/projects/<project>/: role checks, project in the serializer context."""

    permission_classes = [IsAuthenticated, TokenScopeAllows, HasProjectRole]
    pagination_class = ApiPagination
    filter_backends = [OrderingFilter]
    project = None
    role = None

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context.update(project=self.project, role=self.role)
        return context

    def fake(self) -> bool:
        """True while drf-spectacular builds the schema (no request, no project)."""
        return getattr(self, "swagger_fake_view", False)

    def filter_workflow(self, qs, field: str = "workflow"):
        value = self.request.query_params.get("workflow", "").strip()
        if not value:
            return qs
        workflows = self.project.workflows.all()
        pk = parse_id(value)
        workflow = workflows.filter(pk=pk).first() if pk is not None else workflows.filter(slug=value).first()
        if workflow is None:
            raise ValidationError({"workflow": [f"No workflow '{value}' in this project."]})
        return qs.filter(**{field: workflow})

    def filter_id(self, qs, param: str, field: str, what: str):
        """Rows whose `field` is the id given as query parameter `param`; ValidationError for anything
        but an id (core.formats.parse_id)."""
        value = self.request.query_params.get(param, "").strip()
        if not value:
            return qs
        pk = parse_id(value)
        if pk is None:
            raise ValidationError({param: [f"'{value}' is not {what} id (a whole number)."]})
        return qs.filter(**{field: pk})

    def filter_dates(self, qs, param: str, field: str):
        params = self.request.query_params
        if params.get(f"{param}_after"):
            qs = qs.filter(**{f"{field}__gte": query_time(f"{param}_after", params[f"{param}_after"])})
        if params.get(f"{param}_before"):
            before = query_time(f"{param}_before", params[f"{param}_before"], end_of_day=True)
            qs = qs.filter(**{f"{field}__lte": before})
        return qs


# ---------------------------------------------------------------------------------------------
# Projects, workflows, subject sets


@extend_schema(tags=["projects"])
class ProjectList(generics.ListAPIView):
    """Projects you have a role in (owner, scientist or viewer)."""

    serializer_class = ProjectSerializer
    pagination_class = ApiPagination

    def get_queryset(self):
        return projects_readable_by(self.request.user).order_by("slug")


@extend_schema(tags=["projects"])
class ProjectDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """One project you have a role in."""

    serializer_class = ProjectSerializer

    def get_object(self):
        return self.project


@extend_schema(tags=["projects"])
class WorkflowList(ProjectScopedMixin, generics.ListAPIView):
    """The project's workflows with their retirement and aggregation parameters."""

    serializer_class = WorkflowSerializer
    ordering_fields = ["id", "slug", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return Workflow.objects.none()
        return self.project.workflows.select_related("active_model")


@extend_schema(tags=["projects"])
class WorkflowDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """One workflow."""

    serializer_class = WorkflowSerializer

    def get_queryset(self):
        if self.fake():
            return Workflow.objects.none()
        return self.project.workflows.select_related("active_model")


@extend_schema(tags=["projects"], parameters=[WORKFLOW_PARAM])
class SubjectSetList(ProjectScopedMixin, generics.ListAPIView):
    """The project's subject sets with their sizes."""

    serializer_class = SubjectSetSerializer
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return SubjectSet.objects.none()
        qs = self.project.subject_sets.annotate(n_subjects=Count("subjects")).prefetch_related("workflows")
        return self.filter_workflow(qs, "workflows")


# ---------------------------------------------------------------------------------------------
# Rare gems


@extend_schema(
    tags=["volunteers"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter("subject", OpenApiTypes.INT, description="Subject id"),
        *date_range_params("created", "Flagged"),
    ],
)
class GemFlagList(ProjectScopedMixin, generics.ListAPIView):
    """Subjects volunteers flagged as rare gems (unlike any class of the field guide), one row per
    volunteer and subject, with their note (plain text) and the vote it came with; participants as
    project pseudonyms. Owners, scientists and viewers."""

    serializer_class = GemFlagSerializer
    ordering_fields = ["id", "created_at", "updated_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return GemFlag.objects.none()
        qs = GemFlag.objects.filter(workflow__project=self.project).select_related(
            "workflow", "subject", "participant"
        )
        qs = self.filter_workflow(qs)
        qs = self.filter_id(qs, "subject", "subject_id", "a subject")
        return self.filter_dates(qs, "created", "created_at")


# ---------------------------------------------------------------------------------------------
# Model versions


@extend_schema(
    tags=["models"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter(
            "status", OpenApiTypes.STR, description="candidate, active, rejected, failed, retired"
        ),
    ],
)
class ModelVersionList(ProjectScopedMixin, generics.ListAPIView):
    """Trained model versions with their metrics and artifact download URLs."""

    serializer_class = ModelVersionSerializer
    ordering_fields = ["id", "version", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return ModelVersion.objects.none()
        qs = ModelVersion.objects.filter(workflow__project=self.project)
        if self.request.query_params.get("status"):
            qs = qs.filter(status=self.request.query_params["status"])
        return self.filter_workflow(qs)


@extend_schema(tags=["models"])
class ModelVersionDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """One model version."""

    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        if self.fake():
            return ModelVersion.objects.none()
        return ModelVersion.objects.filter(workflow__project=self.project)


class ModelArtifactDownload(ProjectScopedMixin, APIView):
    """The model version's checkpoint file (streamed); its SHA-256 is in X-Checksum-SHA256."""

    renderer_classes = [JSONRenderer, AnyMediaJSONRenderer]

    @extend_schema(
        tags=["models"],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="PyTorch checkpoint"
            ),
            404: ErrorSerializer,
        },
    )
    def get(self, request, project, pk):
        model = get_object_or_404(
            ModelVersion.objects.select_related("workflow"), pk=pk, workflow__project=self.project
        )
        if not model.artifact:
            return Response(
                {"detail": "This model version has no artifact."}, status=status.HTTP_404_NOT_FOUND
            )
        # Stored under a random name in private storage; the download gets a readable one.
        response = file_response(
            model.artifact.name,
            content_type="application/octet-stream",
            filename=f"{self.project.slug}-{model.workflow.slug}-{model.kind}-v{model.version}.pt",
            as_attachment=True,
        )
        if model.artifact_sha256:
            response["X-Checksum-SHA256"] = model.artifact_sha256
        return response


# ---------------------------------------------------------------------------------------------
# Ingestion uploads


class UploadCreate(ProjectScopedMixin, APIView):
    """Ingestion uploads (owners and scientists)."""

    required_roles = WRITE_ROLES
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        tags=["ingestion"],
        request={"multipart/form-data": UploadSerializer},
        responses={202: IngestJobSerializer, 400: None},
        summary="Upload files to ingest as subjects (runs as a job)",
    )
    def post(self, request, project):
        """Store the files and queue an ingest job; 202 with the job. Poll the job's URL for its
        progress and report (one bad file is reported there and the others go in)."""
        files = request.FILES.getlist("files")
        # A body DRF did not parse as a form (empty, or no content type) comes back as a plain dict.
        form = request.data.dict() if hasattr(request.data, "dict") else dict(request.data)
        data = UploadSerializer(data={**form, "files": files})
        data.is_valid(raise_exception=True)
        workflow = self.project.workflows.filter(pk=data.validated_data["workflow"]).first()
        if workflow is None:
            raise ValidationError({"workflow": ["No such workflow in this project."]})
        try:
            job = create_ingest_job(
                project=self.project,
                workflow=workflow,
                uploads=files,
                user=request.user,
                subject_set_name=data.validated_data.get("subject_set", ""),
            )
        except IngestError as exc:
            raise ValidationError({"files": [str(exc)]})
        job.refresh_from_db()  # where jobs run at once (eager mode) it has finished already
        body = IngestJobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class IngestJobDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """An ingest job: status, progress and, once finished, its report."""

    required_roles = WRITE_ROLES
    serializer_class = IngestJobSerializer

    def get_queryset(self):
        if self.fake():
            return Job.objects.none()
        return Job.objects.filter(project=self.project, kind=Job.INGEST)

    @extend_schema(tags=["ingestion"], summary="An ingest job and its report")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Exports


class ExportListCreate(ProjectScopedMixin, generics.ListAPIView):
    """Export jobs of the project (GET), or start one (POST; owners, scientists and viewers)."""

    serializer_class = ExportJobSerializer
    required_roles = EXPORT_ROLES

    def get_queryset(self):
        if self.fake():
            return Job.objects.none()
        return exporters.export_jobs(self.project).select_related("project")

    @extend_schema(tags=["exports"], summary="List export jobs")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["exports"],
        request=ExportRequestSerializer,
        responses={202: ExportJobSerializer, 400: ErrorSerializer},
        summary="Start an export",
    )
    def post(self, request, project):
        """Queue an export; poll its `url` until `status` is succeeded, then GET `download_url`."""
        data = ExportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            with transaction.atomic():
                job = exporters.start_export(
                    project=self.project,
                    user=request.user,
                    role=self.role,
                    kind=v["export"],
                    fmt=v["format"],
                    workflow_id=v.get("workflow"),
                    split=v.get("split"),
                )
        except exporters.ExportError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        job.refresh_from_db()
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["exports"])
class ExportDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """One export job: status, progress (0..1) and, once done, its download URL."""

    serializer_class = ExportJobSerializer
    required_roles = EXPORT_ROLES

    def get_queryset(self):
        if self.fake():
            return Job.objects.none()
        return exporters.export_jobs(self.project).select_related("project")


class ExportDownload(ProjectScopedMixin, APIView):
    """The export's file, streamed; 409 while the job is queued or running (or failed)."""

    required_roles = EXPORT_ROLES
    renderer_classes = [JSONRenderer, AnyMediaJSONRenderer]

    @extend_schema(
        tags=["exports"],
        responses={
            # The file's own type, by the export's format (octet-stream for a format it does not know).
            **{
                (200, content_type): OpenApiResponse(OpenApiTypes.BINARY, description="The export file")
                for content_type in sorted({*exporters.CONTENT_TYPES.values(), "application/octet-stream"})
            },
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
        summary="Download an export (streamed)",
    )
    def get(self, request, project, pk):
        job = get_object_or_404(exporters.export_jobs(self.project), pk=pk)
        if job.status != Job.SUCCEEDED or not job.result:
            detail = (
                job.error
                if job.status == Job.FAILED
                else f"The export is {job.status}; try again when it is done."
            )
            return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
        return exporters.download_response(job)
