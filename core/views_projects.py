"""The project builder's pages: your projects, creating, editing and deleting a project, its team
(members, roles, invitations), the public "about" page and cover, a volunteer's own page (/me/),
and the page a paused or finished project shows where a task would be.

Who may do what is core.permissions' one set of rules: editing and the lifecycle need OWNER_ROLES
(owner, scientist), the team and deleting TEAM_ROLES (owner); the about page and cover follow
`can_volunteer` like every volunteer page.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import ProtectedError, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from core import contributions, gems, team
from core.forms import InviteForm, ProjectForm, RoleForm
from core.markup import render_markdown
from core.models import Participant, Project, Workflow
from core.participants import participant_for_request
from core.permissions import (
    EXPERT,
    OWNER_ROLES,
    TEAM_ROLES,
    project_for_request,
    staff_sees_all,
    volunteer_project,
)
from core.storage import file_response


def closed_page(request, workflow: Workflow, message: str, status: int = 200):
    """Where a task would be, for a paused or finished project: the message and nothing to answer.
    htmx requests get the task section only (static/skyvote/classify.js swaps 4xx answers in)."""
    template = "core/project_closed.html#task" if request.htmx else "core/project_closed.html"
    context = {"project": workflow.project, "workflow": workflow, "message": message}
    return render(request, template, context, status=status)


def member_projects(user):
    """Projects the user owns or is a member of, each with `my_role`."""
    if staff_sees_all(user):
        projects = list(Project.objects.order_by("name"))
    else:
        projects = list(
            Project.objects.filter(Q(owner=user) | Q(memberships__user=user)).distinct().order_by("name")
        )
    for project in projects:
        project.my_role = project.role_of(user)
    return projects


@login_required
def my_projects(request):
    """ "Dashboard" in the navigation: every project you are in, and "Create a project"."""
    return render(request, "core/my_projects.html", {"projects": member_projects(request.user)})


@login_required
def project_create(request):
    form = ProjectForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        project = form.save(commit=False)
        project.owner = request.user
        project.save()
        messages.success(
            request,
            f"“{project.name}” is created as a {project.get_status_display().split(':')[0].lower()}. "
            "Add workflows and subjects, invite your team, and make it live when it is ready.",
        )
        return redirect("labeling:project_dashboard", project.slug)
    return render(request, "core/project_form.html", {"form": form, "creating": True}, status=_status(form))


def _status(form) -> int:
    return 400 if form.is_bound and not form.is_valid() else 200


@login_required
def project_settings(request, project):
    project, role = project_for_request(request, project, OWNER_ROLES)
    old_cover = project.cover_image.name
    form = ProjectForm(request.POST or None, request.FILES or None, instance=project)
    if request.method == "POST" and form.is_valid():
        project = form.save()
        if old_cover and old_cover != project.cover_image.name:
            project.cover_image.storage.delete(old_cover)
        messages.success(request, "Saved.")
        return redirect("core:project_settings", project.slug)
    context = {"form": form, "project": project, "role": role, "creating": False}
    return render(request, "core/project_form.html", context, status=_status(form))


@login_required
def project_delete(request, project):
    project, role = project_for_request(request, project, TEAM_ROLES)
    error = None
    if request.method == "POST":
        if request.POST.get("confirm", "").strip() != project.slug:
            error = f"Type the project's slug, {project.slug}, to confirm."
        else:
            name, cover = project.name, project.cover_image.name
            try:
                with transaction.atomic():
                    project.delete()
            except ProtectedError:
                error = "Something still refers to this project; it was not deleted."
            else:
                if cover:
                    Project._meta.get_field("cover_image").storage.delete(cover)
                messages.success(request, f"“{name}” and everything in it are deleted.")
                return redirect("core:my_projects")
    counts = {
        "subjects": project.subjects.count(),
        "workflows": project.workflows.count(),
        "members": project.memberships.count(),
    }
    context = {"project": project, "role": role, "error": error, "counts": counts}
    return render(request, "core/project_delete.html", context, status=400 if error else 200)


@login_required
def team_page(request, project):
    """Members and open invitations; the owner adds, changes and removes them here (POST `action`)."""
    project, role = project_for_request(request, project, TEAM_ROLES)
    invite_form = InviteForm(request.POST if request.POST.get("action") == "invite" else None)
    error, status = None, 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "invite":
                if not invite_form.is_valid():
                    raise team.TeamError("Enter a user name or an e-mail address and a role.")
                kind, added = team.add_member(
                    project,
                    invite_form.cleaned_data["who"],
                    invite_form.cleaned_data["role"],
                    invited_by=request.user,
                    build_url=request.build_absolute_uri,
                )
                if kind == "added":
                    messages.success(request, f"{added.user.username} is now {added.role} of this project.")
                else:
                    messages.success(request, f"An invitation is on its way to {added.email}.")
                return redirect("core:team", project.slug)
            if action == "role":
                membership = get_object_or_404(project.memberships, pk=_int(request.POST.get("membership")))
                form = RoleForm(request.POST)
                if not form.is_valid():
                    raise team.TeamError("Choose one of the roles.")
                team.set_role(membership, form.cleaned_data["role"])
                messages.success(request, f"{membership.user.username} is now {membership.role}.")
                return redirect("core:team", project.slug)
            if action == "remove":
                membership = get_object_or_404(project.memberships, pk=_int(request.POST.get("membership")))
                membership.delete()
                messages.success(request, f"{membership.user.username} is no longer a member.")
                return redirect("core:team", project.slug)
            if action == "revoke":
                invitation = get_object_or_404(
                    project.invitations, pk=_int(request.POST.get("invitation")), accepted_at__isnull=True
                )
                invitation.delete()
                messages.success(request, f"The invitation to {invitation.email} is withdrawn.")
                return redirect("core:team", project.slug)
            raise team.TeamError("Unknown action.")
        except team.TeamError as exc:
            error, status = str(exc), 400
    context = {
        "project": project,
        "role": role,
        "owner": project.owner,
        "memberships": project.memberships.select_related("user").order_by("user__username"),
        "invitations": project.invitations.filter(accepted_at__isnull=True).order_by("-created_at"),
        "invite_form": invite_form,
        "role_choices": RoleForm.base_fields["role"].choices,
        "error": error,
    }
    return render(request, "core/team.html", context, status=status)


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def invitation(request, token):
    """An invitation link: shows what it is for; signed in, POST accepts it."""
    try:
        invite = team.invitation_from_token(token)
    except team.TeamError as exc:
        return render(request, "core/invitation.html", {"error": str(exc)}, status=400)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('login')}?next={request.path}")
        try:
            team.accept(invite, request.user)
        except team.TeamError as exc:
            return render(request, "core/invitation.html", {"error": str(exc)}, status=400)
        messages.success(request, f"Welcome to “{invite.project.name}”: you are {invite.role} of it.")
        return redirect("core:my_projects")
    return render(request, "core/invitation.html", {"invitation": invite, "next": request.path})


def project_about(request, project):
    """A project's public page: the long description (sanitised Markdown), cover, licence, contact."""
    project = volunteer_project(request, project)
    role = project.role_of(request.user)
    workflows = list(project.workflows.order_by("pk"))
    context = {
        "project": project,
        "about": render_markdown(project.long_description),
        "workflows": [w for w in workflows if w.is_active],
        "role": role,
        # Experts have no dashboard: this page is where they find the gold pages, drafts included
        # (gold is labelled before a workflow goes live).
        "gold_workflows": [w for w in workflows if w.kind == Workflow.REAL_BOGUS] if role == EXPERT else [],
    }
    return render(request, "core/project_about.html", context)


def project_cover(request, project):
    """The cover image, for whoever may see the project (private storage: no public URL)."""
    project = volunteer_project(request, project)
    if not project.cover_image:
        raise Http404("This project has no cover image.")
    cache = "public, max-age=3600" if project.is_public else "private, max-age=3600"
    return file_response(project.cover_image.name, cache_control=cache)


def me(request):
    """My classifications: the projects I took part in, my counts per workflow, my recent subjects
    with my answer and, once retired, the consensus, my gold accuracy where gold feedback is given, and
    the rare gems I flagged with my notes. Anonymous volunteers see what their browser session did.
    Each app answers for its own vote table (core.contributions); flags are core's (core.gems)."""
    participant = participant_for_request(request, create=False)
    workflows, recent, gem_flags = [], [], []
    if participant is not None:
        ids = [
            participant.pk,
            *Participant.objects.filter(merged_into=participant).values_list("pk", flat=True),
        ]
        counts = contributions.counts(ids)
        flagged = gems.counts_by_workflow(ids)
        by_id = Workflow.objects.select_related("project").in_bulk({*counts, *flagged})
        for workflow_id, workflow in by_id.items():
            row = counts.get(workflow_id, {"n": 0, "n_gold": 0, "n_gold_correct": 0})
            workflows.append(
                {
                    "workflow": workflow,
                    "project": workflow.project,
                    "n": row["n"],
                    "n_gold": row["n_gold"],
                    "accuracy": row["n_gold_correct"] / row["n_gold"] if row["n_gold"] else None,
                    "n_gems": flagged.get(workflow_id, 0),
                }
            )
        workflows.sort(key=lambda w: (w["project"].name, w["workflow"].name))
        recent = contributions.recent(ids, limit=20)
        gem_flags = list(gems.flags_of(ids))
    projects = sorted({w["project"] for w in workflows}, key=lambda p: p.name)
    context = {"workflows": workflows, "recent": recent, "projects": projects, "gem_flags": gem_flags}
    return render(request, "core/me.html", context)
