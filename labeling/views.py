"""Volunteer and scientist pages for real/bogus workflows. Thin: logic lives in services."""

import uuid

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from core.formats import parse_client_time
from core.models import Participant, Project, Subject, Workflow
from core.participants import participant_for_request
from core.permissions import READ_ROLES, project_for_request
from labeling import selection
from labeling.models import Vote
from labeling.services import VoteError, record_vote


def _workflow(project_slug: str, workflow_slug: str) -> Workflow:
    return get_object_or_404(
        Workflow.objects.select_related("project"),
        project__slug=project_slug,
        slug=workflow_slug,
        is_active=True,
    )


def _classify_context(request, workflow, participant, feedback=None, error=None):
    # One query for both counts: classifications shown to the volunteer, and everything answered
    # (skips too) for the selector's gold schedule.
    counts = Vote.objects.filter(workflow=workflow, participant=participant).aggregate(
        seen=Count("id"), done=Count("id", filter=~Q(answer=Vote.SKIP))
    )
    n_done = counts["done"]
    subject = selection.next_subject(workflow, participant, n_seen=counts["seen"])
    return {
        "project": workflow.project,
        "workflow": workflow,
        "subject": subject,
        "n_done": n_done,
        "vote_key": uuid.uuid4(),
        "shown_at": timezone.now().isoformat(),
        "feedback": feedback,
        "error": error,
        "show_tutorial": not request.session.get(f"tutorial-{workflow.pk}"),
        "vote_url": reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug]),
    }


def classify(request, project, workflow):
    workflow = _workflow(project, workflow)
    if workflow.kind != Workflow.REAL_BOGUS:
        return redirect(workflow.get_absolute_url())
    participant = participant_for_request(request)
    return render(request, "labeling/classify.html", _classify_context(request, workflow, participant))


@require_POST
def submit_vote(request, project, workflow):
    workflow = _workflow(project, workflow)
    participant = participant_for_request(request)
    feedback = error = None
    try:
        result = record_vote(
            workflow=workflow,
            subject_id=int(request.POST.get("subject", "0") or 0),
            participant=participant,
            answer=request.POST.get("answer", ""),
            idempotency_key=request.POST.get("key", ""),
            started_at=parse_client_time(request.POST.get("started_at")),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=request.POST.get("viewport", ""),
        )
        feedback = result.feedback
    except (VoteError, ValueError) as exc:
        error = str(exc)
    context = _classify_context(request, workflow, participant, feedback=feedback, error=error)
    if request.htmx:
        return render(request, "labeling/classify.html#task", context)
    return redirect("labeling:classify", workflow.project.slug, workflow.slug)


@require_POST
def tutorial_seen(request, project, workflow):
    workflow = _workflow(project, workflow)
    request.session[f"tutorial-{workflow.pk}"] = True
    if request.htmx:
        return render(request, "core/empty.html")
    return redirect("labeling:classify", workflow.project.slug, workflow.slug)


def field_guide(request, project):
    project = get_object_or_404(Project, slug=project)
    from labeling.fieldguide import field_guide_entries

    return render(
        request, "labeling/field_guide.html", {"project": project, "entries": field_guide_entries()}
    )


@login_required
def project_dashboard(request, project):
    project, role = project_for_request(request, project, READ_ROLES)
    subjects = Subject.objects.filter(project=project)
    votes = Vote.objects.filter(workflow__project=project)
    since = timezone.now() - timezone.timedelta(hours=24)
    per_hour = (
        votes.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("id"))
        .order_by("hour")
    )
    context = {
        "project": project,
        "workflows": project.workflows.all(),
        "n_subjects": subjects.count(),
        "n_active": subjects.filter(status=Subject.ACTIVE).count(),
        "n_retired": subjects.filter(status=Subject.RETIRED).count(),
        "n_votes": votes.exclude(answer=Vote.SKIP).count(),
        "n_participants": Participant.objects.filter(votes__workflow__project=project).distinct().count(),
        "per_hour": list(per_hour),
        "latest_votes": votes.select_related("subject", "workflow").order_by("-created_at")[:20],
        "role": role,
    }
    if request.htmx:
        return render(request, "labeling/dashboard.html#stats", context)
    return render(request, "labeling/dashboard.html", context)
