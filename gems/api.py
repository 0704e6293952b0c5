"""The REST API of rare gems: a workflow's gem candidates, best first, with their anomaly scores,
flags, notes and ratings (read: owners, scientists, viewers), and ratings (owners, scientists).
As everywhere in the API, experts count as having no role (404): they rate on the Gems page.
skyvote/api_urls.py mounts these views.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ApiPagination, ProjectScopedMixin
from core.formats import parse_id
from core.permissions import OWNER_ROLES, READ_ROLES
from core.serializers import ErrorSerializer
from gems import services
from gems.exporters import rater_pseudonym


class GemRatingOutSerializer(serializers.Serializer):
    rating = serializers.IntegerField(help_text="0 (nothing) to 5 (a real find)")
    rated_by = serializers.CharField(help_text="The rater's pseudonym in this project")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class GemCandidateSerializer(serializers.Serializer):
    rank = serializers.IntegerField(help_text="1 = the best candidate")
    subject = serializers.IntegerField()
    external_id = serializers.CharField()
    gem_score = serializers.FloatField(help_text="Combined gem score (0–1)")
    weirdness = serializers.FloatField(help_text="Combined weirdness (0–1)")
    iforest = serializers.FloatField(allow_null=True)
    knn = serializers.FloatField(allow_null=True)
    urf = serializers.FloatField(allow_null=True)
    disagreement = serializers.FloatField(help_text="|P(real) of the crowd − the model's score|")
    reasons = serializers.ListField(child=serializers.CharField())
    n_flags = serializers.IntegerField()
    notes = serializers.ListField(child=serializers.CharField(), help_text="Volunteers' notes, plain text")
    ratings = GemRatingOutSerializer(many=True)


class GemRatingInSerializer(serializers.Serializer):
    workflow = serializers.CharField(help_text="Workflow id or slug")
    subject = serializers.IntegerField()
    rating = serializers.JSONField(help_text="0 to 5 (a whole number)")


class GemRatingSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    rating = serializers.IntegerField()
    rated_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class GemPagination(ApiPagination):
    page_size = services.PAGE_SIZE


def _workflow(project, value):
    value = str(value or "").strip()
    if not value:
        raise ValidationError({"workflow": ["Name the workflow (id or slug)."]})
    pk = parse_id(value)
    workflows = project.workflows.select_related("active_model")
    workflow = workflows.filter(pk=pk).first() if pk is not None else workflows.filter(slug=value).first()
    if workflow is None:
        raise ValidationError({"workflow": [f"No workflow '{value[:50]}' in this project."]})
    workflow.project = project
    return workflow


@extend_schema(
    tags=["gems"],
    parameters=[
        OpenApiParameter("workflow", OpenApiTypes.STR, required=True, description="Workflow id or slug"),
        OpenApiParameter(
            "show", OpenApiTypes.STR, description="review (default: nobody rated them yet), rated, all"
        ),
    ],
    responses={200: GemCandidateSerializer(many=True), 400: ErrorSerializer, 404: ErrorSerializer},
    summary="Rare-gem candidates, best first",
)
class GemCandidateList(ProjectScopedMixin, APIView):
    """A workflow's rare-gem candidates from its latest anomaly run, best first (the Gems page's
    ranking: weirdness, skill-weighted flags, crowd–model disagreement, and what the team's ratings
    taught it), 20 a page. Owners, scientists and viewers."""

    required_roles = READ_ROLES
    pagination_class = GemPagination

    def get(self, request, project):
        workflow = _workflow(self.project, request.query_params.get("workflow"))
        show = request.query_params.get("show", "review")
        if show not in ("review", "rated", "all"):
            raise ValidationError({"show": ["One of review, rated, all."]})
        table = services.gem_table(workflow)
        if table is None:
            rows = []
        else:
            rated = table.rating == table.rating  # not NaN
            order = table.order
            if show == "review":
                order = order[~rated[order]]
            elif show == "rated":
                order = order[rated[order]]
            rows = list(order)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self)
        start = (paginator.page.number - 1) * paginator.get_page_size(request) if rows else 0
        return paginator.get_paginated_response(self._rows(workflow, table, page or [], start))

    def _rows(self, workflow, table, chosen, start):
        from core.models import Subject
        from gems.models import GemRating

        ids = [int(table.ids[r]) for r in chosen]
        external = dict(Subject.objects.filter(pk__in=ids).values_list("pk", "external_id"))
        notes = {k: [note for note, _ in v] for k, v in services.flag_notes(workflow, ids).items()}
        ratings: dict[int, list] = {}
        for g in GemRating.objects.filter(workflow=workflow, subject_id__in=ids).order_by("updated_at", "pk"):
            ratings.setdefault(g.subject_id, []).append(
                {
                    "rating": g.rating,
                    "rated_by": rater_pseudonym(self.project, g.rated_by_id),
                    "created_at": g.created_at,
                    "updated_at": g.updated_at,
                }
            )

        def number(value):
            return None if value != value else float(value)

        out = []
        for k, r in enumerate(chosen):
            subject_id = int(table.ids[r])
            out.append(
                {
                    "rank": start + k + 1,
                    "subject": subject_id,
                    "external_id": external.get(subject_id, ""),
                    "gem_score": float(table.score[r]),
                    "weirdness": float(table.weirdness[r]),
                    **{name: number(table.methods[name][r]) for name in services.METHODS},
                    "disagreement": float(table.disagreement[r]),
                    "reasons": services.reasons(table, r),
                    "n_flags": int(table.n_flags[r]),
                    "notes": notes.get(subject_id, []),
                    "ratings": ratings.get(subject_id, []),
                }
            )
        return GemCandidateSerializer(out, many=True).data


@extend_schema(
    tags=["gems"],
    request=GemRatingInSerializer,
    responses={
        201: GemRatingSerializer,
        200: OpenApiResponse(
            GemRatingSerializer, description="A rating that replaced the rater's earlier one."
        ),
        400: ErrorSerializer,
        403: ErrorSerializer,
        404: ErrorSerializer,
    },
    summary="Rate a rare-gem candidate (0–5)",
)
class GemRatingCreate(ProjectScopedMixin, APIView):
    """Rate a candidate of a workflow, 0 (nothing) to 5 (a real find); a second rating by the same
    person replaces the first. The ranking learns from ratings. Owners and scientists."""

    required_roles_by_method = {"POST": OWNER_ROLES}
    required_roles = OWNER_ROLES

    def post(self, request, project):
        data = request.data if isinstance(request.data, dict) else {}
        workflow = _workflow(self.project, data.get("workflow"))
        existed = services.GemRating.objects.filter(
            subject_id=parse_id(str(data.get("subject", ""))), rated_by=request.user
        ).exists()
        try:
            rating = services.rate(workflow, data.get("subject"), request.user, data.get("rating"))
        except services.GemError as exc:
            if isinstance(exc, services.GemNotFound):
                raise NotFound(str(exc)) from None
            raise ValidationError({"rating": [str(exc)]}) from None
        body = {
            "workflow": workflow.pk,
            "subject": rating.subject_id,
            "rating": rating.rating,
            "rated_by": rater_pseudonym(self.project, request.user.pk),
            "created_at": rating.created_at,
            "updated_at": rating.updated_at,
        }
        return Response(
            GemRatingSerializer(body).data, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        )
