"""The Gems page: a workflow's rare-gem candidates, best first, with why they rank high, and keyboard
ratings that teach the ranking. Thin: the ranking and the ratings are gems.services.

Every team role may look (owner, scientist, expert, viewer); owners, scientists and experts rate
(viewers get 403); nobody without a role learns that the project exists (404).
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.formats import parse_id
from core.models import Workflow
from core.permissions import EXPERT_ROLES, MEMBER_ROLES, OWNER_ROLES, workflow_for
from gems import services

SHOW_CHOICES = ("review", "rated")


@login_required
@require_GET
def gems_page(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, roles=MEMBER_ROLES)
    show = request.GET.get("show", "review")
    show = show if show in SHOW_CHOICES else "review"
    page_number = parse_id(request.GET.get("page", "1")) or 1
    page = services.candidates_page(workflow, request.user, page=page_number, show=show)
    return render(
        request,
        "gems/gems.html",
        {
            "project": workflow.project,
            "workflow": workflow,
            "page": page,
            "can_rate": role in EXPERT_ROLES,
            "role": role,
            # Owners and scientists may send the best candidates to another workflow of the project.
            "send_targets": workflow.project.workflows.exclude(pk=workflow.pk).order_by("name")
            if role in OWNER_ROLES
            else [],
            "send_default": services.GEM_SOURCE_TOP,
        },
    )


@login_required
@require_POST
def rate(request, project, workflow, subject):
    workflow, role = workflow_for(request, project, workflow, roles=EXPERT_ROLES)
    try:
        rating = services.rate(workflow, subject, request.user, request.POST.get("rating"))
    except services.GemError as exc:
        status = 404 if isinstance(exc, services.GemNotFound) else 400
        return HttpResponse(str(exc), status=status, content_type="text/plain; charset=utf-8")
    if not request.htmx:  # the buttons without JavaScript: back to the page, the row now rated
        return redirect(reverse("gems:gems", args=[workflow.project.slug, workflow.slug]))
    return render(
        request,
        "gems/gems.html#rated",
        {"rating": rating, "subject_id": rating.subject_id},
    )


@login_required
@require_POST
def send(request, project, workflow):
    """Queue copies of the top candidates into a new subject set of another workflow of the project."""
    workflow, _role = workflow_for(request, project, workflow, roles=OWNER_ROLES)
    target_id = parse_id(request.POST.get("target", ""))
    target = Workflow.objects.filter(pk=target_id, project=workflow.project).first() if target_id else None
    n = parse_id(request.POST.get("n", "")) or 0
    try:
        if target is None:
            raise services.GemNotFound("Pick a workflow of this project to send the candidates to.")
        job, _created = services.request_send(workflow, target, n, user=request.user)
    except services.GemError as exc:
        messages.error(request, str(exc))
        return redirect(reverse("gems:gems", args=[workflow.project.slug, workflow.slug]))
    messages.success(request, f"Copying the top {n} candidates to “{target.name}” (job #{job.pk}).")
    return redirect(reverse("gems:gems", args=[workflow.project.slug, workflow.slug]))
