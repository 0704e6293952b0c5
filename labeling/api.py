"""The REST API (issue 8). Read endpoints under /api/projects/<slug>/..., write endpoints for votes
and ingestion uploads, exports as background jobs with streamed downloads.

Authentication: personal API tokens (core.authentication) or the browser session. Every
project-scoped endpoint resolves the project through core.permissions: someone without a role
in the project gets 404, a viewer gets 403 where owners/collaborators are needed.
Thin views: the work is in labeling.services, labeling.exports and core.ingest.
"""

from datetime import UTC, datetime, time
from pathlib import Path

from django.db import transaction
from django.db.models import BooleanField, Case, Count, Q, Value, When
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import ModelVersion, Subject, SubjectSet, Workflow
from core.participants import participant_for_request
from core.permissions import EXPORT_ROLES, WRITE_ROLES, HasProjectRole, projects_readable_by
from jobs.models import Job
from labeling import exports
from labeling.models import ParticipantSkill, Vote
from labeling.serializers import (
    ErrorSerializer,
    ExportJobSerializer,
    ExportRequestSerializer,
    IngestJobSerializer,
    ModelVersionSerializer,
    ProjectSerializer,
    SimilarityVoteSerializer,
    SkillSerializer,
    SubjectSerializer,
    SubjectSetSerializer,
    UploadSerializer,
    VoteInSerializer,
    VoteOutSerializer,
    VoteSerializer,
    WorkflowSerializer,
)
from labeling.services import VoteError, record_vote

# ---------------------------------------------------------------------------------------------
# Votes (the JSON twin of the classify page)


def vote_payload(result) -> dict:
    vote = result.vote
    return {
        "id": vote.pk,
        "workflow": vote.workflow_id,
        "subject": vote.subject_id,
        "answer": vote.answer,
        "idempotency_key": str(vote.idempotency_key),
        "created_at": vote.created_at.isoformat(),
        "late": vote.subject_was_retired,
        "created": result.created,
        "feedback": result.feedback,
    }


@extend_schema(
    request=VoteInSerializer,
    responses={
        201: VoteOutSerializer,
        200: OpenApiResponse(VoteOutSerializer, description="The idempotency key was seen before."),
        400: ErrorSerializer,
        404: ErrorSerializer,
    },
    tags=["votes"],
    summary="Record one vote",
)
@api_view(["POST"])
@permission_classes([AllowAny])
def vote_create(request):
    """Record one vote. Re-sending the same idempotency key returns the first result (200)."""
    data = VoteInSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=v["workflow"], is_active=True)
    participant = participant_for_request(request)
    try:
        result = record_vote(
            workflow=workflow,
            subject_id=v["subject"],
            participant=participant,
            answer=v["answer"],
            idempotency_key=v["idempotency_key"],
            started_at=v.get("started_at"),
            finished_at=v.get("finished_at"),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=v.get("viewport", ""),
            source="api",
        )
    except VoteError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    return Response(
        vote_payload(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    )


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


def _parse_when(name: str, value: str, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time from a query parameter; naive values are UTC."""
    try:
        parsed = parse_datetime(value)
        day = parse_date(value) if parsed is None else None
    except ValueError:
        parsed = day = None
    if parsed is None:
        if day is None:
            raise ValidationError({name: f"'{value}' is not an ISO date (2024-05-01) or date-time."})
        parsed = datetime.combine(day, time.max if end_of_day else time.min)
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValidationError({name: f"'{value}' is not true or false."})


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

    permission_classes = [IsAuthenticated, HasProjectRole]
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
        workflow = (
            workflows.filter(pk=int(value)).first()
            if value.isdigit()
            else workflows.filter(slug=value).first()
        )
        if workflow is None:
            raise ValidationError({"workflow": f"No workflow '{value}' in this project."})
        return qs.filter(**{field: workflow})

    def filter_dates(self, qs, param: str, field: str):
        params = self.request.query_params
        if params.get(f"{param}_after"):
            qs = qs.filter(**{f"{field}__gte": _parse_when(f"{param}_after", params[f"{param}_after"])})
        if params.get(f"{param}_before"):
            qs = qs.filter(
                **{
                    f"{field}__lte": _parse_when(
                        f"{param}_before", params[f"{param}_before"], end_of_day=True
                    )
                }
            )
        return qs


# ---------------------------------------------------------------------------------------------
# Projects, workflows, subject sets


@extend_schema(tags=["projects"])
class ProjectList(generics.ListAPIView):
    """Projects you have a role in (owner, collaborator or viewer)."""

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
# Subjects and votes


def with_decided(qs, project):
    """Annotate `decided` (the subject has a training label) with each workflow's own rule."""
    whens = [
        When(Q(workflow_id=wf.pk) & exports.decided_filter(wf), then=Value(True))
        for wf in project.workflows.filter(kind=Workflow.REAL_BOGUS)
    ]
    if not whens:
        return qs.annotate(decided=Value(False, output_field=BooleanField()))
    return qs.annotate(decided=Case(*whens, default=Value(False), output_field=BooleanField()))


@extend_schema(
    tags=["subjects"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter("status", OpenApiTypes.STR, enum=["active", "retired"]),
        OpenApiParameter(
            "gold", OpenApiTypes.BOOL, description="Only subjects with (true) / without a gold label"
        ),
        OpenApiParameter("external_id", OpenApiTypes.STR),
        OpenApiParameter("object_id", OpenApiTypes.STR),
        *date_range_params("created", "Ingested"),
        *date_range_params("retired", "Retired"),
    ],
)
class SubjectList(ProjectScopedMixin, generics.ListAPIView):
    """Subjects with their aggregated label, P(real), votes, retirement and model score."""

    serializer_class = SubjectSerializer
    ordering_fields = [
        "id",
        "created_at",
        "retired_at",
        "p_real",
        "vote_count",
        "model_score",
        "model_uncertainty",
    ]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return Subject.objects.none()
        params = self.request.query_params
        qs = Subject.objects.filter(project=self.project).select_related("workflow__active_model")
        qs = self.filter_workflow(qs)
        if params.get("status"):
            if params["status"] not in (Subject.ACTIVE, Subject.RETIRED):
                raise ValidationError({"status": "Use 'active' or 'retired'."})
            qs = qs.filter(status=params["status"])
        if params.get("gold"):
            has_gold = Q(gold_label__in=[Subject.REAL, Subject.BOGUS])
            qs = qs.filter(has_gold) if _parse_bool("gold", params["gold"]) else qs.exclude(has_gold)
        for name in ("external_id", "object_id"):
            if params.get(name):
                qs = qs.filter(**{name: params[name]})
        qs = self.filter_dates(qs, "created", "created_at")
        qs = self.filter_dates(qs, "retired", "retired_at")
        return with_decided(qs, self.project)


@extend_schema(tags=["subjects"])
class SubjectDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    """One subject with its aggregated label, posterior, votes, retirement and model score."""

    serializer_class = SubjectSerializer

    def get_queryset(self):
        if self.fake():
            return Subject.objects.none()
        qs = Subject.objects.filter(project=self.project).select_related("workflow__active_model")
        return with_decided(qs, self.project)


@extend_schema(
    tags=["votes"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter("subject", OpenApiTypes.INT, description="Subject id"),
        OpenApiParameter("answer", OpenApiTypes.STR),
        OpenApiParameter("gold", OpenApiTypes.BOOL, description="Votes on gold subjects"),
        OpenApiParameter("late", OpenApiTypes.BOOL, description="Votes that arrived after retirement"),
        *date_range_params("created", "Stored"),
    ],
)
class VoteList(ProjectScopedMixin, generics.ListAPIView):
    """Raw votes, one per row; participants as project pseudonyms (for bulk, use the votes export)."""

    serializer_class = VoteSerializer
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return Vote.objects.none()
        params = self.request.query_params
        qs = Vote.objects.filter(workflow__project=self.project).select_related(
            "workflow", "subject", "participant"
        )
        qs = self.filter_workflow(qs)
        if params.get("subject"):
            if not params["subject"].isdigit():
                raise ValidationError({"subject": "A subject id is a number."})
            qs = qs.filter(subject_id=int(params["subject"]))
        if params.get("answer"):
            qs = qs.filter(answer=params["answer"].strip().lower())
        if params.get("gold"):
            qs = qs.filter(was_gold=_parse_bool("gold", params["gold"]))
        if params.get("late"):
            qs = qs.filter(subject_was_retired=_parse_bool("late", params["late"]))
        return self.filter_dates(qs, "created", "created_at")


@extend_schema(
    tags=["similarity"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter("task", OpenApiTypes.INT),
        *date_range_params("created", "Stored"),
    ],
)
class SimilarityVoteList(ProjectScopedMixin, generics.ListAPIView):
    """Similarity votes: per task the candidates shown and the ones chosen (empty list if the app lacks them)."""

    serializer_class = SimilarityVoteSerializer
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if not exports.similarity_available():
            return Vote.objects.none()
        from similarity.models import SimilarityVote

        if self.fake():
            return SimilarityVote.objects.none()
        qs = SimilarityVote.objects.filter(workflow__project=self.project).select_related(
            "task", "participant"
        )
        qs = self.filter_workflow(qs)
        task = self.request.query_params.get("task", "")
        if task:
            if not task.isdigit():
                raise ValidationError({"task": "A task id is a number."})
            qs = qs.filter(task_id=int(task))
        return self.filter_dates(qs, "created", "created_at")


@extend_schema(tags=["volunteers"], parameters=[WORKFLOW_PARAM])
class SkillList(ProjectScopedMixin, generics.ListAPIView):
    """What we believe about each volunteer (SWAP P_L / P_D, gold record), by pseudonym."""

    serializer_class = SkillSerializer
    ordering_fields = ["n_votes", "n_gold", "p_l", "p_d", "updated_at"]
    ordering = ["-n_votes"]

    def get_queryset(self):
        if self.fake():
            return ParticipantSkill.objects.none()
        qs = ParticipantSkill.objects.filter(workflow__project=self.project).select_related(
            "workflow", "participant"
        )
        return self.filter_workflow(qs).order_by("-n_votes", "pk")


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
        model = get_object_or_404(ModelVersion, pk=pk, workflow__project=self.project)
        if not model.artifact:
            return Response(
                {"detail": "This model version has no artifact."}, status=status.HTTP_404_NOT_FOUND
            )
        response = FileResponse(
            model.artifact.open("rb"), as_attachment=True, filename=Path(model.artifact.name).name
        )
        if model.artifact_sha256:
            response["X-Checksum-SHA256"] = model.artifact_sha256
        return response


# ---------------------------------------------------------------------------------------------
# Ingestion uploads


class UploadCreate(ProjectScopedMixin, APIView):
    """Ingestion uploads (owners and collaborators)."""

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
        from core.ingest import IngestError, create_ingest_job

        files = request.FILES.getlist("files")
        data = UploadSerializer(data={**request.data.dict(), "files": files})
        data.is_valid(raise_exception=True)
        workflow = self.project.workflows.filter(pk=data.validated_data["workflow"]).first()
        if workflow is None:
            raise ValidationError({"workflow": "No such workflow in this project."})
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
        return Job.objects.filter(project=self.project, kind=Job.INGEST)

    @extend_schema(tags=["ingestion"], summary="An ingest job and its report")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Exports


class ExportListCreate(ProjectScopedMixin, generics.ListAPIView):
    """Export jobs of the project (GET), or start one (POST; owners and collaborators)."""

    serializer_class = ExportJobSerializer
    required_roles = EXPORT_ROLES

    def get_queryset(self):
        if self.fake():
            return Job.objects.none()
        return exports.export_jobs(self.project).select_related("project")

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
                job = exports.start_export(
                    project=self.project,
                    user=request.user,
                    role=self.role,
                    kind=v["export"],
                    fmt=v["format"],
                    workflow_id=v.get("workflow"),
                    split=v.get("split"),
                )
        except exports.ExportError as exc:
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
        return exports.export_jobs(self.project).select_related("project")


class ExportDownload(ProjectScopedMixin, APIView):
    """The export's file, streamed; 409 while the job is queued or running (or failed)."""

    required_roles = EXPORT_ROLES
    renderer_classes = [JSONRenderer, AnyMediaJSONRenderer]

    @extend_schema(
        tags=["exports"],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The export file"
            ),
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
        summary="Download an export (streamed)",
    )
    def get(self, request, project, pk):
        job = get_object_or_404(exports.export_jobs(self.project), pk=pk)
        if job.status != Job.SUCCEEDED or not job.result:
            detail = (
                job.error
                if job.status == Job.FAILED
                else f"The export is {job.status}; try again when it is done."
            )
            return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
        fmt = job.params.get("format", "")
        return FileResponse(
            job.result.open("rb"),
            as_attachment=True,
            filename=Path(job.result.name).name,
            content_type=exports.CONTENT_TYPES.get(fmt, "application/octet-stream"),
        )
