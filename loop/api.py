"""The learning loop's REST endpoints (mounted by skyvote.api_urls): a workflow's "start from model"
choice (transfer) and "train now".

| endpoint | who | what |
| --- | --- | --- |
| GET `workflows/<id>/start-from/` | readers | the chosen model (null: from scratch) and, for owners, the models it may be |
| PUT `workflows/<id>/start-from/` | owners | `{"model_version": id or null}` |
| POST `workflows/<id>/train/` | owners | queue a training round (or join the open one); 202 |
"""

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ProjectScopedMixin
from core.models import ModelVersion, Workflow
from core.permissions import OWNER, OWNER_ROLES, READ_ROLES
from core.serializers import ErrorSerializer
from loop import services as loop


class ModelChoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Model version id (in its own project).")
    label = serializers.CharField(help_text="project/workflow vN")
    project = serializers.CharField()
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    heldout_roc_auc = serializers.FloatField(
        allow_null=True, help_text="Its held-out AUC in its own workflow."
    )


class StartFromSerializer(serializers.Serializer):
    start_from = ModelChoiceSerializer(
        allow_null=True, help_text="The model the first round fine-tunes from."
    )
    applies = serializers.BooleanField(
        help_text="Whether the next round starts from it: only while the workflow has no active model."
    )
    candidates = ModelChoiceSerializer(
        many=True, help_text="Models it may be (owners only; empty for other roles)."
    )


class StartFromRequestSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(
        allow_null=True,
        help_text="A promoted classifier of another real/bogus workflow in a project you can read; null "
        "to train the first round from scratch.",
    )


class TrainRequestSerializer(serializers.Serializer):
    force_promote = serializers.BooleanField(default=False, help_text="Promote even if not better.")


class TrainJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    message = serializers.CharField()
    created = serializers.BooleanField(help_text="False: a round was already open and this joins it.")
    start_from = ModelChoiceSerializer(
        allow_null=True, help_text="The model this round fine-tunes from (the first round only)."
    )
    model_versions_url = serializers.URLField(help_text="Where the round's model version appears.")


def _choice(version: ModelVersion | None) -> dict | None:
    if version is None:
        return None
    return {
        "id": version.pk,
        "label": loop.model_label(version),
        "project": version.workflow.project.slug,
        "workflow": version.workflow.slug,
        "version": version.version,
        "heldout_roc_auc": ((version.metrics or {}).get("heldout") or {}).get("roc_auc"),
    }


class WorkflowScopedMixin(ProjectScopedMixin):
    def workflow(self, pk) -> Workflow:
        return get_object_or_404(
            Workflow.objects.select_related("project", "start_from__workflow__project"),
            project=self.project,
            pk=pk,
            kind=Workflow.REAL_BOGUS,
        )

    def start_from_body(self, workflow: Workflow) -> dict:
        candidates = loop.start_from_candidates(workflow, self.request.user) if self.role == OWNER else []
        return {
            "start_from": _choice(workflow.start_from),
            "applies": workflow.start_from_id is not None and workflow.active_model_id is None,
            "candidates": [_choice(v) for v in candidates],
        }


class WorkflowStartFrom(WorkflowScopedMixin, APIView):
    """The model a real/bogus workflow's first round fine-tunes from (transfer, e.g. a Rubin workflow
    from a ZTF workflow's promoted model). That round also trains a model from scratch in the same
    time and reports both held-out AUCs (the new version's metrics["transfer"])."""

    required_roles_by_method = {"GET": READ_ROLES, "PUT": OWNER_ROLES}

    @extend_schema(tags=["models"], responses={200: StartFromSerializer, 404: ErrorSerializer})
    def get(self, request, project, pk):
        return Response(self.start_from_body(self.workflow(pk)))

    @extend_schema(
        tags=["models"],
        request=StartFromRequestSerializer,
        responses={200: StartFromSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
        summary="Choose the model the first round fine-tunes from",
    )
    def put(self, request, project, pk):
        workflow = self.workflow(pk)
        data = StartFromRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            loop.set_start_from(workflow, data.validated_data["model_version"], request.user)
        except loop.LoopError as exc:
            raise ValidationError({"model_version": [str(exc)]})
        workflow = self.workflow(pk)
        return Response(self.start_from_body(workflow))


class WorkflowTrain(WorkflowScopedMixin, APIView):
    """Start a training round now (owners): it runs as a job on the gpu queue; a round already
    queued or running is joined instead. The new model version appears under model-versions."""

    required_roles = OWNER_ROLES

    @extend_schema(
        tags=["models"],
        request=TrainRequestSerializer,
        responses={202: TrainJobSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
        summary="Train now",
    )
    def post(self, request, project, pk):
        workflow = self.workflow(pk)
        data = TrainRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job, created = loop.request_training(
                workflow, user=request.user, force_promote=data.validated_data["force_promote"], reason="api"
            )
        except loop.LoopError as exc:
            raise ValidationError({"detail": str(exc)})
        job.refresh_from_db()  # where jobs run at once (eager mode) it has finished already
        url = reverse("api_model_versions", args=[self.project.slug]) + f"?workflow={workflow.pk}"
        body = {
            "id": job.pk,
            "status": job.status,
            "progress": job.progress,
            "message": job.message,
            "created": created,
            "start_from": _choice(workflow.start_from) if workflow.active_model_id is None else None,
            "model_versions_url": request.build_absolute_uri(url),
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)
