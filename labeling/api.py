"""JSON API views (issue 8 builds the full REST API around these)."""

from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from .models import Workflow
from .participants import participant_for_request
from .services import VoteError, record_vote


class VoteInSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    answer = serializers.CharField(max_length=30)
    idempotency_key = serializers.UUIDField()
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    finished_at = serializers.DateTimeField(required=False, allow_null=True)
    viewport = serializers.CharField(required=False, allow_blank=True, max_length=40)


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
    return Response(vote_payload(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

