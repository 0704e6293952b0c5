"""The REST API of the project builder: creating, updating and deleting projects, and their members.

The same rules as the pages (core.views_projects), from core.permissions: anyone signed in creates a
project (and owns it); owners and scientists (OWNER_ROLES) update it, the lifecycle included; only
the owner (TEAM_ROLES) deletes it and manages members. Someone with no role gets 404. Validation is
core.forms' (slug, short description, cover image), so the API refuses what the pages refuse.
"""

from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from core import team
from core.api import ApiPagination, ProjectDetail, ProjectList, ProjectScopedMixin
from core.forms import validate_cover, validate_short_description
from core.models import Project, ProjectMembership
from core.permissions import MEMBERSHIP_ROLE_CHOICES, OWNER_ROLES, READ_ROLES, TEAM_ROLES, TokenScopeAllows
from core.serializers import ErrorSerializer, ProjectSerializer


class ProjectWriteSerializer(ProjectSerializer):
    """A project as written: every field optional on update (PATCH); `cover_image` by multipart upload."""

    cover_image = serializers.FileField(
        required=False,
        allow_null=True,
        write_only=True,
        validators=[validate_cover],
        help_text="PNG, JPEG, WebP or GIF, at most 5 MB and 25 megapixels (multipart); null removes it.",
    )
    description = serializers.CharField(
        required=False,
        allow_blank=True,
        validators=[validate_short_description],
        help_text="At most 300 characters.",
    )
    long_description = serializers.CharField(
        required=False, allow_blank=True, help_text="Markdown; shown sanitised (no HTML, no scripts)."
    )
    status = serializers.ChoiceField(
        choices=Project.STATUSES,
        required=False,
        help_text="New projects start as drafts unless this says otherwise.",
    )

    class Meta(ProjectSerializer.Meta):
        fields = [*ProjectSerializer.Meta.fields, "cover_image"]
        read_only_fields = ["id", "created_at"]
        # Uniqueness is checked in validate_slug with a clearer message than the model's.
        extra_kwargs = {"slug": {"validators": []}}

    def validate_slug(self, value: str) -> str:
        value = value.lower()
        others = Project.objects.filter(slug__iexact=value)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise ValidationError("Another project already uses this slug: choose another address.")
        return value

    def _save(self, save):
        try:
            with transaction.atomic():
                return save()
        except IntegrityError:  # the same slug taken at the same moment
            raise ValidationError(
                {"slug": ["Another project already uses this slug: choose another address."]}
            )

    def create(self, validated_data):
        validated_data.setdefault("status", Project.DRAFT)
        validated_data["status_changed_at"] = timezone.now()
        return self._save(lambda: super(ProjectWriteSerializer, self).create(validated_data))

    def update(self, instance, validated_data):
        if "status" in validated_data and validated_data["status"] != instance.status:
            validated_data["status_changed_at"] = timezone.now()
        old_cover = instance.cover_image.name
        if "cover_image" in validated_data and validated_data["cover_image"] is None:
            validated_data["cover_image"] = ""
        project = self._save(lambda: super(ProjectWriteSerializer, self).update(instance, validated_data))
        if old_cover and old_cover != project.cover_image.name:
            project.cover_image.storage.delete(old_cover)
        return project


@extend_schema_view(
    get=extend_schema(tags=["projects"], summary="Projects you have a role in"),
    post=extend_schema(
        tags=["projects"],
        summary="Create a project (you own it)",
        request={"application/json": ProjectWriteSerializer, "multipart/form-data": ProjectWriteSerializer},
        responses={
            201: ProjectSerializer,
            400: OpenApiResponse(description="What is wrong, field by field."),
        },
    ),
)
class ProjectListCreate(ProjectList, generics.ListCreateAPIView):
    """Projects you have a role in (owner, scientist or viewer); POST creates one, owned by you."""

    permission_classes = [IsAuthenticated, TokenScopeAllows]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    pagination_class = ApiPagination

    def get_serializer_class(self):
        return ProjectWriteSerializer if self.request.method == "POST" else ProjectSerializer

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        body = ProjectSerializer(serializer.instance, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(tags=["projects"], summary="One project you have a role in"),
    put=extend_schema(
        tags=["projects"],
        summary="Replace a project's settings (owners and scientists)",
        request={"application/json": ProjectWriteSerializer, "multipart/form-data": ProjectWriteSerializer},
        responses={
            200: ProjectSerializer,
            400: OpenApiResponse(description="What is wrong, field by field."),
        },
    ),
    patch=extend_schema(
        tags=["projects"],
        summary="Change a project's settings or state (owners and scientists)",
        request={"application/json": ProjectWriteSerializer, "multipart/form-data": ProjectWriteSerializer},
        responses={
            200: ProjectSerializer,
            400: OpenApiResponse(description="What is wrong, field by field."),
        },
    ),
    delete=extend_schema(
        tags=["projects"],
        summary="Delete a project and everything in it (owner only)",
        responses={204: None, 403: ErrorSerializer, 404: ErrorSerializer},
    ),
)
class ProjectDetailUpdate(ProjectDetail, generics.RetrieveUpdateDestroyAPIView):
    """One project: read (readers), update (owners and scientists), delete (owner)."""

    required_roles_by_method = {
        "GET": READ_ROLES,
        "HEAD": READ_ROLES,
        "OPTIONS": READ_ROLES,
        "PUT": OWNER_ROLES,
        "PATCH": OWNER_ROLES,
        "DELETE": TEAM_ROLES,
    }
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_serializer_class(self):
        return ProjectWriteSerializer if self.request.method in ("PUT", "PATCH") else ProjectSerializer

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        serializer = self.get_serializer(self.project, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(ProjectSerializer(serializer.instance, context=self.get_serializer_context()).data)

    def perform_destroy(self, instance):
        cover = instance.cover_image.name
        instance.delete()
        if cover:
            Project._meta.get_field("cover_image").storage.delete(cover)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=MEMBERSHIP_ROLE_CHOICES)

    class Meta:
        model = ProjectMembership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["id", "username", "created_at"]


class MemberAddSerializer(serializers.Serializer):
    who = serializers.CharField(
        max_length=254,
        help_text="A user name, or an e-mail address (invited by e-mail if it has no account).",
    )
    role = serializers.ChoiceField(choices=MEMBERSHIP_ROLE_CHOICES)


class MemberAddedSerializer(serializers.Serializer):
    result = serializers.ChoiceField(choices=["added", "invited"])
    membership = MembershipSerializer(allow_null=True)
    invited_email = serializers.EmailField(allow_null=True)


@extend_schema_view(
    get=extend_schema(tags=["members"], summary="The project's members (owner only)"),
    post=extend_schema(
        tags=["members"],
        summary="Add a member, or invite an e-mail address (owner only)",
        request=MemberAddSerializer,
        responses={
            201: MemberAddedSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
        },
    ),
)
class MemberListCreate(ProjectScopedMixin, generics.ListCreateAPIView):
    """Members of the project other than its owner. POST adds an existing account at once, or e-mails an
    invitation link to an address without one (the membership starts when it is accepted)."""

    required_roles = TEAM_ROLES
    serializer_class = MembershipSerializer

    def get_queryset(self):
        if self.fake():
            return ProjectMembership.objects.none()
        return self.project.memberships.select_related("user").order_by("pk")

    def create(self, request, *args, **kwargs):
        data = MemberAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            kind, added = team.add_member(
                self.project,
                data.validated_data["who"],
                data.validated_data["role"],
                invited_by=request.user,
                build_url=request.build_absolute_uri,
            )
        except team.TeamError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        body = {
            "result": kind,
            "membership": MembershipSerializer(added).data if kind == "added" else None,
            "invited_email": added.email if kind == "invited" else None,
        }
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(tags=["members"], summary="One member (owner only)"),
    put=extend_schema(tags=["members"], summary="Change a member's role (owner only)"),
    patch=extend_schema(tags=["members"], summary="Change a member's role (owner only)"),
    delete=extend_schema(tags=["members"], summary="Remove a member (owner only)"),
)
class MemberDetail(ProjectScopedMixin, generics.RetrieveUpdateDestroyAPIView):
    required_roles = TEAM_ROLES
    serializer_class = MembershipSerializer

    def get_queryset(self):
        if self.fake():
            return ProjectMembership.objects.none()
        return self.project.memberships.select_related("user")

    def get_object(self):
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])
