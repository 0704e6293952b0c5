"""The REST API of real/bogus volunteering: recording a vote (the JSON twin of the classify page),
and reading subjects with their decided label, votes and volunteer skill. The shared machinery
(project scoping, pagination, filters) is core.api; skyvote/api_urls.py mounts these views.
"""

from django.db.models import BooleanField, Case, Q, Value, When
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from core import followups, gems, ratelimit, tickets
from core.api import WORKFLOW_PARAM, ProjectScopedMixin, date_range_params, query_bool
from core.models import Subject, Workflow
from core.participants import participant_for_request
from core.permissions import TokenScopeAllows, can_volunteer, vote_refusal
from core.serializers import ErrorSerializer
from labeling import selection
from labeling.labels import decided_filter
from labeling.models import ParticipantSkill, Vote
from labeling.serializers import (
    NextSubjectSerializer,
    SkillSerializer,
    SubjectSerializer,
    VoteInSerializer,
    VoteOutSerializer,
    VoteSerializer,
)
from labeling.services import VoteError, record_vote

# ---------------------------------------------------------------------------------------------
# Votes (the JSON twin of the classify page)


def vote_payload(result, gem=None) -> dict:
    vote = result.vote
    flag = gem.flag if gem is not None else None
    return {
        "id": vote.pk,
        "workflow": vote.workflow_id,
        "subject": vote.subject_id,
        "answer": vote.answer,
        "followup": vote.followup,
        "idempotency_key": str(vote.idempotency_key),
        "created_at": vote.created_at.isoformat(),
        "late": vote.subject_was_retired,
        "created": result.created,
        "feedback": result.feedback,
        "gem": flag is not None,
        "gem_note": flag.note if flag is not None else "",
        "gem_detail": (gem.message or "") if gem is not None else "",
    }


def slow_down(exc: ratelimit.RateLimited) -> Response:
    return Response(
        {"detail": str(exc)},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(exc.retry_after)},
    )


@extend_schema(
    responses={
        200: NextSubjectSerializer,
        400: ErrorSerializer,
        404: ErrorSerializer,
        409: OpenApiResponse(ErrorSerializer, description="The project is paused or finished."),
        429: OpenApiResponse(ErrorSerializer, description="Too many requests: slow down (see Retry-After)."),
    },
    tags=["votes"],
    summary="Serve the next subject to answer",
)
@api_view(["GET"])
@permission_classes([AllowAny, TokenScopeAllows])
def next_subject(request, project, pk):
    """The next subject for the caller (token user, or the anonymous session: keep its cookie), with
    its image URLs and the ticket the vote on it must carry (POST /api/votes/). Gold answers are never
    in it. Asking again serves another subject; nothing left: `subject` is null."""
    workflow = get_object_or_404(
        Workflow.objects.select_related("project"), project__slug=project, pk=pk, is_active=True
    )
    if not can_volunteer(request, workflow.project):  # a private project's outsiders: as if it did not exist
        raise Http404("No Workflow matches the given query.")
    if workflow.kind != Workflow.REAL_BOGUS:
        return Response(
            {"detail": "This workflow asks which images are similar: answer it on its page."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    refusal = vote_refusal(workflow.project)
    if refusal:  # paused or finished: nothing is served that could not be answered
        return Response({"detail": refusal}, status=status.HTTP_409_CONFLICT)
    participant = participant_for_request(request)
    try:
        ratelimit.check(request, "serve", participant)
    except ratelimit.RateLimited as exc:
        return slow_down(exc)
    subject, ticket = selection.serve_next(workflow, participant)
    images = {}
    for role in (subject.images or {}) if subject else ():
        url = subject.image_url(role)
        images[role] = request.build_absolute_uri(url) if url else url
    served_at, expires_at = tickets.served_and_expiry(ticket) if ticket else (None, None)
    return Response(
        {
            "workflow": workflow.pk,
            "subject": subject.pk if subject else None,
            "external_id": subject.external_id if subject else None,
            "images": images,
            "answers": [*workflow.answer_keys, Vote.SKIP],
            "followups": followups.asked(workflow.followups),
            "ticket": ticket,
            "served_at": served_at.isoformat() if served_at else None,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "detail": "" if subject else "Nothing is left for you to answer in this workflow right now.",
        }
    )


@extend_schema(
    request=VoteInSerializer,
    responses={
        201: VoteOutSerializer,
        200: OpenApiResponse(VoteOutSerializer, description="The idempotency key was seen before."),
        400: ErrorSerializer,
        403: OpenApiResponse(
            ErrorSerializer, description="The ticket does not fit: expired, another's, another subject's."
        ),
        404: ErrorSerializer,
        409: OpenApiResponse(
            ErrorSerializer,
            description="The project is paused or finished: no new votes (those already made are kept).",
        ),
        429: OpenApiResponse(ErrorSerializer, description="Too many votes: slow down (see Retry-After)."),
    },
    tags=["votes"],
    summary="Record one vote",
)
@api_view(["POST"])
@permission_classes([AllowAny, TokenScopeAllows])  # volunteers vote without an account; read tokens may not
def vote_create(request):
    """Record one vote on a subject served by GET …/workflows/{id}/next/, with its ticket. Re-sending
    the same idempotency key returns the first result (200, without gold feedback)."""
    data = VoteInSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=v["workflow"], is_active=True)
    if not can_volunteer(request, workflow.project):  # a private project's outsiders: as if it did not exist
        raise Http404("No Workflow matches the given query.")
    participant = participant_for_request(request)
    try:
        ratelimit.check(request, "vote", participant)
    except ratelimit.RateLimited as exc:
        return slow_down(exc)
    try:
        result = record_vote(
            workflow=workflow,
            subject_id=v["subject"],
            participant=participant,
            answer=v["answer"],
            followup=v.get("followup", ""),
            idempotency_key=v["idempotency_key"],
            started_at=v.get("started_at"),
            finished_at=v.get("finished_at"),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=v.get("viewport", ""),
            source="api",
            ticket=v.get("ticket", ""),
        )
    except tickets.TicketError as exc:
        return Response({"detail": str(exc)}, status=exc.status)
    except VoteError as exc:  # 409 for a paused or finished project (core.votes.refuse_if_closed)
        return Response({"detail": str(exc)}, status=getattr(exc, "status", status.HTTP_400_BAD_REQUEST))
    # Only now, with the vote accepted: a refused vote (its subject never served) flags nothing.
    gem = gems.flag_with_vote(
        request,
        vote=result.vote,
        subject_id=result.vote.subject_id,
        participant=participant,
        gem=v.get("gem"),
        note=v.get("gem_note"),
    )
    return Response(
        vote_payload(result, gem), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    )


# ---------------------------------------------------------------------------------------------
# Subjects, votes and skills


def with_decided(qs, project):
    """Annotate `decided` (the subject has a training label) with each workflow's own rule."""
    whens = [
        When(Q(workflow_id=wf.pk) & decided_filter(wf), then=Value(True))
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
                raise ValidationError({"status": ["Use 'active' or 'retired'."]})
            qs = qs.filter(status=params["status"])
        if params.get("gold"):
            has_gold = Q(gold_label__in=[Subject.REAL, Subject.BOGUS])
            qs = qs.filter(has_gold) if query_bool("gold", params["gold"]) else qs.exclude(has_gold)
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
    """Raw votes, one per row; participants as project pseudonyms (for bulk, use the votes export).
    Votes taken back (undone, or a skip replaced by a later answer) are left out, as in the export.
    `gem` and `gem_note`: the rare-gem flag the volunteer sent with the vote."""

    serializer_class = VoteSerializer
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]

    def get_queryset(self):
        if self.fake():
            return Vote.objects.none()
        params = self.request.query_params
        qs = Vote.objects.filter(workflow__project=self.project, retracted=False).select_related(
            "workflow", "subject", "participant"
        )
        qs = gems.with_gem_note(qs)
        qs = self.filter_workflow(qs)
        qs = self.filter_id(qs, "subject", "subject_id", "a subject")
        if params.get("answer"):
            qs = qs.filter(answer=params["answer"].strip().lower())
        if params.get("gold"):
            qs = qs.filter(was_gold=query_bool("gold", params["gold"]))
        if params.get("late"):
            qs = qs.filter(subject_was_retired=query_bool("late", params["late"]))
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
