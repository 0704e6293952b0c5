"""The REST API of the workflow builder: create and update workflows and subject sets.

Same permissions as the pages: owners and scientists (WRITE_ROLES) write, viewers read (403 on a
write), anyone without a role gets 404. Every rule is core.workflows' (the pages and the commands use
it too); a broken one is a 400 with the field's message, never a 500. The list and detail views
extend core.api's read-only ones, so reading is unchanged.
"""

from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core import api as core_api
from core import workflows
from core.formats import MAX_ID
from core.models import SubjectSet, Workflow
from core.permissions import READ_ROLES, WRITE_ROLES
from core.serializers import SubjectSetSerializer, WorkflowSerializer
from core.serializers_workflows import (
    SubjectSetWriteSerializer,
    WorkflowCreateSerializer,
    WorkflowUpdateFixedSerializer,
)

WRITES = {"POST": WRITE_ROLES, "PATCH": WRITE_ROLES, "PUT": WRITE_ROLES}


def _builder_error(exc: workflows.BuilderError) -> ValidationError:
    return ValidationError({exc.field or "non_field_errors": [str(exc)]})


def _validated(serializer_class, request, **kwargs) -> dict:
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class WorkflowListCreate(core_api.WorkflowList):
    """The project's workflows (GET); create one (POST, owners and scientists)."""

    required_roles = READ_ROLES
    required_roles_by_method = WRITES

    @extend_schema(
        tags=["projects"],
        request=WorkflowCreateSerializer,
        responses={201: WorkflowSerializer},
        summary="Create a workflow",
    )
    def post(self, request, project):
        """A new workflow, a draft until launched (`is_active`); real/bogus ones get the answers given
        (real and bogus by default), the default tutorial and the built-in field guide."""
        v = _validated(WorkflowCreateSerializer, request)
        slug = v.pop("slug")
        if Workflow.objects.filter(project=self.project, slug=slug).exists():
            raise ValidationError({"slug": [f"This project already has a workflow at '{slug}'."]})
        content = {k: v.pop(k) for k in ("tutorial", "field_guide") if k in v}
        try:
            with transaction.atomic():
                workflow, _ = workflows.create_workflow(
                    self.project,
                    slug,
                    kind=v.pop("kind"),
                    name=v.pop("name", ""),
                    question=v.pop("question", ""),
                    answers=v.pop("answers", None),
                    is_active=v.pop("is_active", False),
                    **v,
                )
                if content:
                    workflows.update_workflow(workflow, **content)
        except workflows.BuilderError as exc:
            raise _builder_error(exc)
        body = WorkflowSerializer(workflow, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)


class WorkflowDetailUpdate(core_api.WorkflowDetail):
    """One workflow (GET); change it (PATCH, owners and scientists). Its kind and slug are fixed."""

    required_roles = READ_ROLES
    required_roles_by_method = WRITES
    http_method_names = ["get", "patch", "head", "options"]

    @extend_schema(
        tags=["projects"],
        request=WorkflowUpdateFixedSerializer,
        responses={200: WorkflowSerializer},
        summary="Change a workflow",
    )
    def patch(self, request, project, pk):
        """Only the fields sent change; answers, tutorial and field guide are replaced as a whole."""
        workflow = get_object_or_404(self.project.workflows.all(), pk=pk)
        v = _validated(WorkflowUpdateFixedSerializer, request)
        try:
            with transaction.atomic():
                workflows.update_workflow(workflow, **v)
        except workflows.BuilderError as exc:
            raise _builder_error(exc)
        return Response(WorkflowSerializer(workflow, context=self.get_serializer_context()).data)


class SubjectSetListCreate(core_api.SubjectSetList):
    """The project's subject sets (GET); create one (POST, owners and scientists)."""

    required_roles = READ_ROLES
    required_roles_by_method = WRITES

    @extend_schema(
        tags=["projects"],
        request=SubjectSetWriteSerializer,
        responses={201: SubjectSetSerializer},
        summary="Create a subject set",
    )
    def post(self, request, project):
        v = _validated(SubjectSetWriteSerializer, request)
        linked = _workflows(self.project, v.get("workflows", []))
        try:
            subject_set = workflows.create_subject_set(self.project, v.get("name", ""), linked)
        except workflows.BuilderError as exc:
            raise _builder_error(exc)
        return Response(_set_body(subject_set, self), status=status.HTTP_201_CREATED)


class SubjectSetDetail(core_api.ProjectScopedMixin, generics.RetrieveAPIView):
    """One subject set (GET); rename it or change the workflows it is linked to (PATCH)."""

    serializer_class = SubjectSetSerializer
    required_roles = READ_ROLES
    required_roles_by_method = WRITES
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        if self.fake():
            return SubjectSet.objects.none()
        return self.project.subject_sets.annotate(n_subjects=Count("subjects")).prefetch_related("workflows")

    @extend_schema(tags=["projects"], summary="A subject set")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["projects"],
        request=SubjectSetWriteSerializer,
        responses={200: SubjectSetSerializer},
        summary="Rename a subject set, attach or detach workflows",
    )
    def patch(self, request, project, pk):
        """`workflows` lists every workflow the set should be linked to: those left out are detached
        (their unanswered subjects leave them), new ones attached."""
        subject_set = get_object_or_404(SubjectSet, pk=pk, project=self.project)
        v = _validated(SubjectSetWriteSerializer, request, partial=True)
        try:
            with transaction.atomic():
                if "name" in v:
                    workflows.rename_subject_set(subject_set, v["name"])
                if "workflows" in v:
                    workflows.set_workflows(subject_set, _workflows(self.project, v["workflows"]))
        except workflows.BuilderError as exc:
            raise _builder_error(exc)
        return Response(_set_body(subject_set, self))


def _workflows(project, ids) -> list[Workflow]:
    # Only numbers an id can be go to the database (SQLite cannot bind a larger one, PostgreSQL rejects
    # it); the others are reported missing like any unknown id.
    found = {w.pk: w for w in project.workflows.filter(pk__in=[i for i in ids if 0 < i <= MAX_ID])}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationError({"workflows": [f"No workflow {missing[0]} in this project."]})
    return [found[i] for i in ids]


def _set_body(subject_set, view) -> dict:
    annotated = view.project.subject_sets.annotate(n_subjects=Count("subjects")).get(pk=subject_set.pk)
    return SubjectSetSerializer(annotated, context=view.get_serializer_context()).data
