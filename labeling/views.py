"""Volunteer and scientist pages for real/bogus workflows. Thin: logic lives in services."""

import uuid

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import ratelimit, tickets
from core.formats import parse_client_time
from core.models import Participant, Subject, Workflow
from core.participants import participant_for_request
from core.permissions import (
    READ_ROLES,
    project_for_request,
    volunteer_project,
    volunteer_workflow,
    vote_refusal,
)
from core.views_projects import closed_page
from labeling import selection
from labeling.models import Vote
from labeling.services import VoteError, record_vote


def _workflow(request, project_slug: str, workflow_slug: str) -> Workflow:
    # 404 for a private project's outsiders too: volunteering there is for its members.
    return volunteer_workflow(request, project_slug, workflow_slug)


def _classify_context(request, workflow, participant, feedback=None, error=None, again=None, slow_down=False):
    """The page's task section. `again`: (subject, ticket, key, shown_at) of a subject served before,
    shown once more after a refused request; otherwise the next subject is served with a new ticket."""
    # One query for both counts: classifications shown to the volunteer, and everything answered
    # on served tickets (skips too) for the selector's gold schedule.
    counts = Vote.objects.filter(workflow=workflow, participant=participant).aggregate(
        seen=Count("id", filter=Q(source__in=Vote.SERVED_SOURCES)),
        done=Count("id", filter=~Q(answer=Vote.SKIP)),
    )
    n_done = counts["done"]
    if again is not None:
        subject, ticket, key, shown_at = again
    elif slow_down:
        subject = ticket = None
    else:
        subject, ticket = selection.serve_next(workflow, participant, n_seen=counts["seen"])
    if again is None:
        key, shown_at = uuid.uuid4(), timezone.now().isoformat()
    return {
        "project": workflow.project,
        "workflow": workflow,
        "subject": subject,
        "ticket": ticket,
        "n_done": n_done,
        "vote_key": key,
        "shown_at": shown_at,
        "feedback": feedback,
        "error": error,
        "slow_down": slow_down,
        "show_tutorial": not request.session.get(f"tutorial-{workflow.pk}"),
        "vote_url": reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug]),
    }


def classify(request, project, workflow):
    workflow = _workflow(request, project, workflow)
    if workflow.kind != Workflow.REAL_BOGUS:
        return redirect(workflow.get_absolute_url())
    refusal = vote_refusal(workflow.project)
    if refusal:  # paused or finished: a polite page, and nothing served that could not be answered
        return closed_page(request, workflow, refusal)
    participant = participant_for_request(request)
    try:
        ratelimit.check(request, "serve", participant)
    except ratelimit.RateLimited as exc:
        context = _classify_context(request, workflow, participant, error=str(exc), slow_down=True)
        return _render(request, "labeling/classify.html", context, 429, exc.retry_after)
    # The gold feedback of a vote sent without JavaScript (answered with a redirect), shown once.
    feedback = request.session.pop(f"feedback-{workflow.pk}", None)
    return render(
        request,
        "labeling/classify.html",
        _classify_context(request, workflow, participant, feedback=feedback),
    )


def _render(request, template, context, status, retry_after=None):
    response = render(request, template, context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@require_POST
def submit_vote(request, project, workflow):
    """Store the vote and serve the next subject. Refusals are 4xx with the task section (htmx swaps
    them in, static/skyvote/classify.js): 400 for a vote that makes no sense, 403 for a ticket that
    does not fit, 429 for too many votes; nothing is stored then."""
    workflow = _workflow(request, project, workflow)
    participant = participant_for_request(request)
    template = "labeling/classify.html#task" if request.htmx else "labeling/classify.html"
    subject_id, ticket = _int(request.POST.get("subject")), request.POST.get("ticket", "")
    try:
        ratelimit.check(request, "vote", participant)
    except ratelimit.RateLimited as exc:
        # The same subject, key and ticket come back to answer again, but only if it really was
        # served to this participant: a refusal must never serve a subject the client chose.
        served = tickets.peek(
            ticket, workflow_id=workflow.pk, kind=tickets.SUBJECT, item_id=subject_id, participant=participant
        )
        subject = Subject.objects.filter(pk=subject_id).first() if served else None
        again = (
            (subject, ticket, request.POST.get("key"), request.POST.get("started_at")) if subject else None
        )
        context = _classify_context(
            request, workflow, participant, error=str(exc), again=again, slow_down=again is None
        )
        return _render(request, template, context, 429, exc.retry_after)
    feedback = error = None
    status = 200
    try:
        result = record_vote(
            workflow=workflow,
            subject_id=subject_id,
            participant=participant,
            answer=request.POST.get("answer", ""),
            idempotency_key=request.POST.get("key", ""),
            started_at=parse_client_time(request.POST.get("started_at")),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=request.POST.get("viewport", ""),
            ticket=ticket,
        )
        feedback = result.feedback
    except tickets.TicketError as exc:
        error, status = str(exc), exc.status
    except (VoteError, ValueError) as exc:
        if getattr(exc, "project_closed", False):  # paused or finished (core.votes.refuse_if_closed)
            return closed_page(request, workflow, str(exc), exc.status)
        error, status = str(exc), 400
    if not request.htmx and error is None:
        if feedback:
            request.session[f"feedback-{workflow.pk}"] = feedback
        return redirect("labeling:classify", workflow.project.slug, workflow.slug)
    context = _classify_context(request, workflow, participant, feedback=feedback, error=error)
    return _render(request, template, context, status)


@require_POST
def tutorial_seen(request, project, workflow):
    workflow = _workflow(request, project, workflow)
    request.session[f"tutorial-{workflow.pk}"] = True
    if request.htmx:
        return render(request, "core/empty.html")
    return redirect("labeling:classify", workflow.project.slug, workflow.slug)


def field_guide(request, project):
    project = volunteer_project(request, project)
    from core.workflow_content import field_guide_entries

    # Each active workflow's own guide (edited on its builder page; the built-in ZTF guide by default).
    guides = [
        {"workflow": w, "entries": field_guide_entries(w)}
        for w in project.workflows.filter(is_active=True, kind=Workflow.REAL_BOGUS).order_by("pk")
    ]
    guides = [g for g in guides if g["entries"]]
    return render(request, "labeling/field_guide.html", {"project": project, "guides": guides})


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
