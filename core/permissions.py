"""Per-project roles: one set of role names and one check for every page and API endpoint.

Role sets (what each page needs is in tests/test_permissions_pages.py, the API's in core/api.py and
the apps' api.py):

| set | roles | for |
| --- | --- | --- |
| OWNER_ROLES | owner | owner actions (train, promote, retire, settings), paid panels, worker ids |
| READ_ROLES | owner, collaborator, viewer | scientist pages (dashboard, models, volunteers, search), API reads |
| WRITE_ROLES = EXPORT_ROLES | owner, collaborator | uploads, exports |
| EXPERT_ROLES | owner, expert | gold labels |
| MEMBER_ROLES | every role | the review queue |

Someone with no role in a project gets 404 everywhere, never 403: a project's existence is not
leaked to other projects' owners. Staff count as owners of every project. On pages, a member whose
role is not enough gets 403. The API knows no experts (they label gold on the pages): to the API an
expert is someone with no role (404).

Pages call `project_for_request` or `workflow_for`; API views use `HasProjectRole` (`project_for`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import permissions

if TYPE_CHECKING:
    from core.models import Project, Workflow

OWNER, COLLABORATOR, VIEWER, EXPERT = "owner", "collaborator", "viewer", "expert"
ROLE_CHOICES = [
    (OWNER, "Owner"),
    (COLLABORATOR, "Collaborator"),
    (VIEWER, "Viewer"),
    (EXPERT, "Expert (labels gold)"),
]

OWNER_ROLES = frozenset({OWNER})
READ_ROLES = frozenset({OWNER, COLLABORATOR, VIEWER})  # the scientist pages and API reads
WRITE_ROLES = frozenset({OWNER, COLLABORATOR})  # uploads
EXPORT_ROLES = WRITE_ROLES
EXPERT_ROLES = frozenset({OWNER, EXPERT})  # gold labels
MEMBER_ROLES = frozenset({OWNER, COLLABORATOR, VIEWER, EXPERT})  # every role: 403, not 404, when refused


def member_role(project: Project | None, user, members=MEMBER_ROLES) -> str:
    """The user's role in `project`; Http404 when there is no project or the role is not in `members`."""
    role = project.role_of(user) if project is not None else None
    if role not in members:
        raise Http404("No such project.")
    return role


def require_role(role: str, roles) -> str:
    """`role` if it is in `roles`; PermissionDenied otherwise."""
    if role not in roles:
        raise PermissionDenied(f"Your role in this project ({role}) does not allow this.")
    return role


def check_role(project: Project | None, user, roles, members=MEMBER_ROLES) -> str:
    """The user's role in `project` if it is in `roles`: Http404 when it is not in `members` (nothing
    leaks), PermissionDenied when it is but `roles` does not include it."""
    return require_role(member_role(project, user, members), roles)


def _project(slug: str) -> Project | None:
    # Imported here: core.models builds ProjectMembership.ROLES from this module's constants.
    from core.models import Project

    return Project.objects.filter(slug=slug).first()


def project_for(user, slug: str, roles=READ_ROLES) -> tuple[Project, str]:
    """The API's check: (project, role) if `user` may do what `roles` allows; Http404 / PermissionDenied
    otherwise. Experts count as having no role (404)."""
    project = _project(slug)
    return project, check_role(project, user, roles, members=READ_ROLES)


def project_for_request(request, slug: str, roles=READ_ROLES) -> tuple[Project, str]:
    """The pages' check: (project, role) if the request's user has one of `roles` in the project.

    Http404 for someone with no role (or no such project), PermissionDenied for a member whose role
    is not in `roles`. Login is the view's business (`login_required` sends anonymous users to log in).
    """
    project = _project(slug)
    return project, check_role(project, request.user, roles)


def workflow_for(
    request, project_slug: str, workflow_slug: str, roles=READ_ROLES, kind=None
) -> tuple[Workflow, str]:
    """(workflow, role) for pages under p/<project>/<workflow>/: as `project_for_request`, and Http404
    when the project has no such workflow (of `kind`, when given)."""
    from core.models import Workflow

    project = _project(project_slug)
    role = member_role(project, request.user)
    # A missing workflow is 404 before any 403: members may know a project's workflows, and a
    # mistyped slug should read as "not found", not as a refusal.
    workflows = Workflow.objects.select_related("active_model").filter(project=project, slug=workflow_slug)
    if kind is not None:
        workflows = workflows.filter(kind=kind)
    workflow = workflows.first()
    if workflow is None:
        raise Http404("No such workflow.")
    workflow.project = project
    return workflow, require_role(role, roles)


def projects_readable_by(user):
    """Projects the user has a reading role in."""
    from core.models import Project

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
    return role == OWNER


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
    """The project if the user has a READ_ROLES role; 404 otherwise (as `project_for`; pages use
    `project_for_request`, which answers members without the role with 403)."""
    return project_for(request.user, slug, READ_ROLES)[0]
