"""Per-project roles: one set of role names and one check for every page and API endpoint.

Role sets (what each page needs is in tests/test_permissions_pages.py, the API's in core/api.py and
the apps' api.py):

| set | roles | for |
| --- | --- | --- |
| TEAM_ROLES | owner | members and invitations, deleting the project, paid panels, worker ids |
| OWNER_ROLES | owner, scientist | running the project: settings and lifecycle, train, promote, retire |
| READ_ROLES | owner, scientist, viewer | scientist pages (dashboard, models, volunteers, search), API reads |
| WRITE_ROLES | owner, scientist | uploads |
| EXPORT_ROLES | owner, scientist, viewer | exports |
| EXPERT_ROLES | owner, scientist, expert | gold labels |
| MEMBER_ROLES | every role | the review queue |

A scientist may do everything but delete the project and manage its members. Paid panels stay
with the owner: their pages show panel worker ids and payments, personal data the owner answers
for (`can_see_worker_ids`).

Someone with no role in a project gets 404 everywhere, never 403: a project's existence is not
leaked to other projects' owners. Staff have no role in projects they are not members of, unless the
deployment sets SKYVOTE_STAFF_SEE_ALL_PROJECTS (then staff and superusers count as owners of every
project). On pages, a member whose role is not enough gets 403. The API knows no experts (they
label gold on the pages): to the API an expert is someone with no role (404).

Volunteering (classify pages, votes, the field guide, subject images): a public project is open to
everyone; a private one (`is_public=False`) only to its members, whatever their role, and to panel
workers through their task links. A project's lifecycle comes on top: a draft is for its members
only (public or not); live takes votes; paused and finished projects are still shown, but take no
new votes (`vote_refusal`, checked by the vote services for every path: page, API, task links). Outsiders get 404 (`can_volunteer`, `volunteer_workflow`,
`volunteer_project`); the home page lists `projects_visible_to` the user.

Pages call `project_for_request` or `workflow_for`; API views use `HasProjectRole` (`project_for`).
API tokens may also be read-only: `TokenScopeAllows` refuses them anything but reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import permissions

if TYPE_CHECKING:
    from core.models import Project, Workflow

OWNER, SCIENTIST, VIEWER, EXPERT = "owner", "scientist", "viewer", "expert"
ROLE_CHOICES = [
    (OWNER, "Owner"),
    (SCIENTIST, "Scientist"),
    (VIEWER, "Viewer (dashboards and exports)"),
    (EXPERT, "Expert (gold labels and the review queue)"),
]
# The roles an owner can give on the team page: there is one owner, the project's `owner`.
MEMBERSHIP_ROLE_CHOICES = ROLE_CHOICES[1:]

TEAM_ROLES = frozenset({OWNER})  # members, invitations, deleting the project, paid panels
OWNER_ROLES = frozenset({OWNER, SCIENTIST})  # running the project: settings, lifecycle, train, retire
READ_ROLES = frozenset({OWNER, SCIENTIST, VIEWER})  # the scientist pages and API reads
WRITE_ROLES = frozenset({OWNER, SCIENTIST})  # uploads
EXPORT_ROLES = frozenset({OWNER, SCIENTIST, VIEWER})
EXPERT_ROLES = frozenset({OWNER, SCIENTIST, EXPERT})  # gold labels
MEMBER_ROLES = frozenset({OWNER, SCIENTIST, VIEWER, EXPERT})  # every role: 403, not 404, when refused

# A project's lifecycle (core.models.Project.status).
DRAFT, LIVE, PAUSED, FINISHED = "draft", "live", "paused", "finished"
STATUS_CHOICES = [
    (DRAFT, "Draft: only members see it"),
    (LIVE, "Live: volunteers classify"),
    (PAUSED, "Paused: no new votes for now"),
    (FINISHED, "Finished: read-only, exports still work"),
]

# What an API token may do (core.models.ApiToken.scope), on top of its user's roles.
TOKEN_READ, TOKEN_WRITE = "read", "write"
TOKEN_SCOPE_CHOICES = [(TOKEN_READ, "Read only"), (TOKEN_WRITE, "Read and write")]


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


def staff_sees_all(user) -> bool:
    """Whether `user` counts as an owner of every project: only staff or superusers, and only where
    the deployment chose it (SKYVOTE_STAFF_SEE_ALL_PROJECTS). Being staff alone grants no project role."""
    if not getattr(settings, "SKYVOTE_STAFF_SEE_ALL_PROJECTS", False):
        return False
    return bool(getattr(user, "is_authenticated", False) and (user.is_staff or user.is_superuser))


def can_volunteer(request, project: Project) -> bool:
    """Whether the request may see, classify and vote in `project`: everyone in a public project,
    only members (any role) in a private one or a draft. Panel workers reach private projects through
    their task links, which check the link instead (panels.views). Whether votes are taken now is
    `vote_refusal`'s business: a paused project's pages still open, to say so."""
    if project.is_public and project.status != DRAFT:
        return True
    return project.role_of(getattr(request, "user", None)) is not None


def vote_refusal(project: Project, served_at=None) -> str | None:
    """Why `project` takes no new vote now (a message for the volunteer), or None when it does.

    A draft takes its members' test votes (outsiders never get that far: `can_volunteer`). A vote on
    something served before the project was paused (`served_at`, from its ticket) is still taken:
    the volunteer was looking at it when the owner pressed pause, and that answer is not thrown away.
    """
    if project.status == PAUSED:
        changed = project.status_changed_at
        if served_at is not None and changed is not None and served_at < changed:
            return None
        # Worded for both places it is shown: the page a paused project shows instead of a task (no
        # answer was sent) and the refusal of a vote.
        return (
            f"“{project.name}” is paused for now and takes no new classifications. Thank you for your help: "
            "every classification you made is kept, and you can carry on when the project resumes."
        )
    if project.status == FINISHED:
        return (
            f"“{project.name}” has finished and takes no more classifications. Thank you: every "
            "classification you made is kept and part of the results."
        )
    return None


def volunteer_project(request, slug: str) -> Project:
    """The project for a volunteer page (the field guide); Http404 when it does not exist or is
    private and the user is not a member, so a private project's existence does not leak."""
    project = _project(slug)
    if project is None or not can_volunteer(request, project):
        raise Http404("No such project.")
    return project


def volunteer_workflow(request, project_slug: str, workflow_slug: str, kind=None) -> Workflow:
    """The active workflow for a volunteer page or vote (classify, vote, tutorial); Http404 when there
    is none (of `kind`, when given) or the request may not volunteer in its project."""
    from core.models import Workflow

    workflows = Workflow.objects.select_related("project").filter(
        project__slug=project_slug, slug=workflow_slug, is_active=True
    )
    if kind is not None:
        workflows = workflows.filter(kind=kind)
    workflow = workflows.first()
    if workflow is None or not can_volunteer(request, workflow.project):
        raise Http404("No such workflow.")
    return workflow


def projects_visible_to(user):
    """The home page's projects: every live public project, and every project the user is a member of."""
    from django.db.models import Q

    from core.models import Project

    if staff_sees_all(user):
        return Project.objects.all()
    # Drafts, paused and finished projects are listed for their members only.
    visible = Q(is_public=True, status=LIVE)
    if getattr(user, "is_authenticated", False):
        visible |= Q(owner=user) | Q(memberships__user=user)
    return Project.objects.filter(visible).distinct()


def projects_readable_by(user):
    """Projects the user has a reading role in."""
    from core.models import Project

    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    if staff_sees_all(user):
        return Project.objects.all()
    from django.db.models import Q

    return Project.objects.filter(
        Q(owner=user) | Q(memberships__user=user, memberships__role__in=sorted(READ_ROLES))
    ).distinct()


def can_see_worker_ids(role: str | None) -> bool:
    """Panel worker ids (e.g. Prolific ids) are personal data the owner is responsible for: owner only,
    not scientists, viewers or experts (TEAM_ROLES)."""
    return role in TEAM_ROLES


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


class TokenScopeAllows(permissions.BasePermission):
    """The one scope check: a read-only API token may read (GET, HEAD, OPTIONS) and nothing else.

    Browser sessions and write tokens pass; the user's roles are checked separately. A view whose
    POST only reads (search) declares `token_scope = "read"`. It is in DEFAULT_PERMISSION_CLASSES,
    and views that set their own permission classes list it too (tests/test_security_accounts.py).
    """

    message = "This API token is read-only: create a token with read and write scope to change anything."

    def has_permission(self, request, view):
        scope = getattr(request.auth, "scope", None)
        if scope is None or scope == TOKEN_WRITE:
            return True
        needed = getattr(view, "token_scope", None) or (
            TOKEN_READ if request.method in permissions.SAFE_METHODS else TOKEN_WRITE
        )
        return needed == TOKEN_READ


def owner_project(request, slug: str) -> Project:
    """The project if the user has a READ_ROLES role; 404 otherwise (as `project_for`; pages use
    `project_for_request`, which answers members without the role with 403)."""
    return project_for(request.user, slug, READ_ROLES)[0]
