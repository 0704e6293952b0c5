"""The similarity app's REST API: its votes under /api/projects/<project>/similarity-votes/
(skyvote/api_urls.py, on core.api's project-scoped machinery), and search by image at
POST /similarity/api/search/.

Search: multipart or JSON body: ``project`` (slug, required), ``workflow`` (slug; optional when the
project has one similarity workflow), and either ``file`` (FITS, PNG or JPEG upload) or
``subject`` (subject id or external id), plus ``top_k`` (1–100, default 10).
Owners, scientists and viewers of the project may search; anyone else gets 404.

Each result has its `rank` (1 = most similar), `similarity_percentile` (the percentile of its cosine
among all pairs of the index: 99.7 means more similar than 99.7 % of pairs; null for an index of one
subject) and the raw `cosine` of the embedding vectors.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core import gems
from core.api import WORKFLOW_PARAM, ProjectScopedMixin, date_range_params
from core.models import Workflow
from core.permissions import project_for
from core.serializers import UploadedFileField
from similarity import services
from similarity.models import SimilarityVote
from similarity.serializers import SimilarityVoteSerializer
from similarity.upload import QueryImageError, read_query_image
from similarity.views import resolve_query_subject


class SearchRequestSerializer(serializers.Serializer):
    project = serializers.SlugField()
    workflow = serializers.SlugField(required=False, allow_blank=True)
    file = UploadedFileField(required=False)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=100)
    top_k = serializers.IntegerField(required=False, min_value=1, max_value=100, default=10)


SearchResponse = inline_serializer(
    "SimilaritySearchResponse",
    fields={
        "workflow": serializers.CharField(),
        "model_version": serializers.IntegerField(),
        "query": serializers.DictField(),
        "results": serializers.ListField(child=serializers.DictField()),
    },
)


class SimilaritySearchView(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    token_scope = "read"  # a POST only because an image is uploaded: searching changes nothing

    @extend_schema(
        request={"multipart/form-data": SearchRequestSerializer, "application/json": SearchRequestSerializer},
        responses={200: SearchResponse, 400: OpenApiResponse(description="bad query"), 404: None},
        summary="Top-k subjects most similar to an uploaded image or a subject",
    )
    def post(self, request):
        form = SearchRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        project, _role = project_for(request.user, data["project"])
        workflows = Workflow.objects.filter(project=project, kind=Workflow.SIMILARITY)
        if data.get("workflow"):
            workflow = workflows.filter(slug=data["workflow"]).first()
        else:
            workflow = workflows.first() if workflows.count() == 1 else None
        if workflow is None:
            return Response(
                {"detail": "Name the similarity workflow (`workflow`): none or several match."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            if data.get("file") is not None:
                array = read_query_image(data["file"])
                hits, version = services.search(workflow, array=array, top_k=data["top_k"])
                query = {"file": data["file"].name}
            elif data.get("subject"):
                subject = resolve_query_subject(project, workflow, data["subject"])
                hits, version = services.search(workflow, subject=subject, top_k=data["top_k"])
                query = {"subject": subject.pk, "external_id": subject.external_id}
            else:
                raise QueryImageError("Send an image as `file` (FITS, PNG or JPEG) or a `subject` id.")
        except QueryImageError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except services.EmbeddingUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        results = [
            {
                "rank": hit.rank,
                "subject": hit.subject.pk,
                "external_id": hit.subject.external_id,
                "similarity_percentile": None if hit.percentile is None else round(hit.percentile, 3),
                "cosine": round(hit.score, 6),
                "image_url": request.build_absolute_uri(url)
                if (url := hit.subject.image_url("image"))
                else None,
            }
            for hit in hits
        ]
        return Response(
            {"workflow": workflow.slug, "model_version": version.version, "query": query, "results": results}
        )


@extend_schema(
    tags=["similarity"],
    parameters=[
        WORKFLOW_PARAM,
        OpenApiParameter("task", OpenApiTypes.INT),
        *date_range_params("created", "Stored"),
    ],
)
class SimilarityVoteList(ProjectScopedMixin, generics.ListAPIView):
    """Similarity votes: per task the candidates shown and the ones chosen, and the rare-gem flag on
    the comparison image sent with the answer (`gem`, `gem_note`)."""

    serializer_class = SimilarityVoteSerializer
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return SimilarityVote.objects.none()
        # Answers to check tasks of paid assignments are attention checks, not similarity data.
        qs = SimilarityVote.objects.filter(
            workflow__project=self.project, task__check_candidate__isnull=True
        ).select_related("task", "participant")
        qs = gems.with_gem_note(self.filter_workflow(qs))
        qs = self.filter_id(qs, "task", "task_id", "a task")
        return self.filter_dates(qs, "created", "created_at")
