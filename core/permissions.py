"""Per-project roles for the API, the export pages and downloads.

| role | reads (API) | exports, ingestion uploads | panel worker ids |
| --- | --- | --- | --- |
| owner | yes | yes | yes |
| collaborator | yes | yes | no |
| viewer | yes | no (403) | no |
| anyone else | 404 | 404 | no |

Someone with no role in a project gets 404 everywhere, never 403: a project's existence
is not leaked to other projects' owners (staff count as owners of every project).
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import permissions

from core.models import Project

READ_ROLES = frozenset({"owner", "collaborator", "viewer"})
EXPORT_ROLES = frozenset({"owner", "collaborator"})
WRITE_ROLES = EXPORT_ROLES


def project_for(user, slug: str, roles=READ_ROLES) -> tuple[Project, str]:
    """(project, role) if `user` may do what `roles` allows; Http404 / PermissionDenied otherwise."""
    project = Project.objects.filter(slug=slug).first()
    role = project.role_of(user) if project else None
    if role not in READ_ROLES:
        raise Http404("No such project.")
    if role not in roles:
        raise PermissionDenied(f"Your role in this project ({role}) does not allow this.")
    return project, role


def projects_readable_by(user):
    """Projects the user has a reading role in."""
    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    from django.db.models import Q

    return Project.objects.filter(
        Q(owner=user) | Q(memberships__user=user, memberships__role__in=sorted(READ_ROLES))
    ).distinct()


def can_see_worker_ids(role: str | None) -> bool:
    """Panel worker ids (e.g. Prolific ids) are personal data the owner is responsible for."""
    return role == "owner"


class HasProjectRole(permissions.BasePermission):
    """For views scoped by a `project` URL kwarg: resolves the project and the user's role.

    The view declares `required_roles` (default READ_ROLES) or `required_roles_by_method`.
    The project and role are stored on the view (`view.project`, `view.role`).
    """

    def has_permission(self, request, view):
        slug = view.kwargs.get("project")
        if slug is None:
            return True
        roles = getattr(view, "required_roles_by_method", {}).get(
            request.method, getattr(view, "required_roles", READ_ROLES)
        )
        view.project, view.role = project_for(request.user, slug, roles)
        return True


def owner_project(request, slug: str) -> Project:
    """The project if the user may see its scientist pages; 404 otherwise (no existence leak)."""
    return project_for(request.user, slug, READ_ROLES)[0]
