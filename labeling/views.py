"""Volunteer and scientist pages for real/bogus workflows. Thin: logic lives in services."""

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Exists, OuterRef, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import followups, gems, ratelimit, tickets
from core.formats import parse_client_time
from core.models import Subject, Workflow
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
from labeling.activity import vote_activity
from labeling.models import Vote
from labeling.services import UndoError, VoteError, record_vote, undo_vote, undo_window_s, undoable_vote


def _workflow(request, project_slug: str, workflow_slug: str) -> Workflow:
    # 404 for a private project's outsiders too: volunteering there is for its members.
    return volunteer_workflow(request, project_slug, workflow_slug)


def _classify_context(
    request,
    workflow,
    participant,
    feedback=None,
    error=None,
    again=None,
    slow_down=False,
    serve=None,
    feedback_for=None,
):
    """The page's task section. `again`: (subject, ticket, key, shown_at) of a subject served before,
    shown once more after a refused request; `serve`: a subject to serve now with a new ticket (the one
    whose answer was just undone); otherwise the next subject is served with a new ticket.
    `feedback_for`: the subject a gold feedback is about, which the page keeps on screen under it
    (static/skyvote/classify.js) until the volunteer moves on."""
    # One query for both counts: classifications shown to the volunteer, and everything answered
    # on served tickets (skips too) for the selector's gold schedule. Undone votes count for neither.
    served = Q(source__in=Vote.SERVED_SOURCES)
    counts = Vote.objects.filter(workflow=workflow, participant=participant, retracted=False).aggregate(
        seen=Count("id", filter=served),
        done=Count("id", filter=~Q(answer=Vote.SKIP)),
        open_skips=Count("id", filter=served & Q(answer=Vote.SKIP)),
    )
    n_done = counts["done"]
    if again is not None:
        subject, ticket, key, shown_at = again
    elif slow_down:
        subject = ticket = None
    elif serve is not None:
        subject, ticket = serve, selection.ticket_for(workflow, serve, participant)
    else:
        subject, ticket = selection.serve_next(
            workflow, participant, n_seen=counts["seen"], open_skips=counts["open_skips"]
        )
    if again is None:
        key, shown_at = uuid.uuid4(), timezone.now().isoformat()
    undo = undoable_vote(workflow, participant)
    return {
        "project": workflow.project,
        "workflow": workflow,
        "subject": subject,
        "ticket": ticket,
        "n_done": n_done,
        "vote_key": key,
        "shown_at": shown_at,
        "feedback": feedback,
        "feedback_for": feedback_for if feedback else None,
        "feedback_ms": int(getattr(settings, "SKYVOTE_GOLD_FEEDBACK_MS", 2500)),
        "error": error,
        "slow_down": slow_down,
        "show_tutorial": not request.session.get(f"tutorial-{workflow.pk}"),
        "vote_url": reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug]),
        # The Undo button: the volunteer's last answer while it can still be taken back.
        "undo": undo,
        "undo_window_s": undo_window_s(),
        # The page hides the button when the window closes (the server refuses after it anyway).
        "undo_left_s": max(0, undo_window_s() - int((timezone.now() - undo.created_at).total_seconds()))
        if undo
        else 0,
        "undo_url": reverse("labeling:undo_vote", args=[workflow.project.slug, workflow.slug]),
        # The "Rare gem?" control (core.gems): volunteer pages only, not paid-panel task pages.
        "gems": True,
        "gem_note_max": gems.NOTE_MAX,
        # "What kind?" after an answer (core.followups), asked in place by classify.js.
        **(followups.page_context(workflow) if subject is not None else {}),
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
        _classify_context(
            request,
            workflow,
            participant,
            feedback=feedback,
            serve=_undone_subject(request, workflow, participant),
        ),
    )


def _undone_subject(request, workflow, participant):
    """The subject whose answer was undone without JavaScript (answered with a redirect): served again
    once, if it is still the volunteer's to answer."""
    subject_id = request.session.pop(f"undone-{workflow.pk}", None)
    if not subject_id:
        return None
    answered = Vote.objects.filter(
        workflow=workflow, participant=participant, subject=OuterRef("pk"), retracted=False
    )
    return (
        Subject.objects.filter(pk=subject_id, workflow=workflow, status=Subject.ACTIVE)
        .exclude(Exists(answered))
        .first()
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
        again = _served_again(request, workflow, participant)
        context = _classify_context(
            request, workflow, participant, error=str(exc), again=again, slow_down=again is None
        )
        return _render(request, template, context, 429, exc.retry_after)
    feedback = error = gem_message = None
    status = 200
    try:
        result = record_vote(
            workflow=workflow,
            subject_id=subject_id,
            participant=participant,
            answer=request.POST.get("answer", ""),
            followup=request.POST.get("followup", ""),
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
    else:
        # Only now, with the vote accepted: a refused vote (its subject never served) flags nothing.
        gem_message = gems.flag_with_vote(
            request,
            vote=result.vote,
            subject_id=result.vote.subject_id,
            participant=participant,
            gem=request.POST.get("gem"),
            note=request.POST.get("gem_note"),
        ).message
    if not request.htmx and error is None:
        if feedback:
            request.session[f"feedback-{workflow.pk}"] = feedback
        if gem_message:
            messages.warning(request, gem_message)
        return redirect("labeling:classify", workflow.project.slug, workflow.slug)
    context = _classify_context(
        request, workflow, participant, feedback=feedback, error=error, feedback_for=subject_id
    )
    context["gem_message"] = gem_message
    return _render(request, template, context, status)


def _served_again(request, workflow, participant):
    """(subject, ticket, key, shown_at) of the subject the request's form was showing, to show it once more
    after a refusal; only if it really was served to this participant (its ticket), never a subject the
    client chose. None otherwise."""
    subject_id, ticket = _int(request.POST.get("subject")), request.POST.get("ticket", "")
    served = tickets.peek(
        ticket, workflow_id=workflow.pk, kind=tickets.SUBJECT, item_id=subject_id, participant=participant
    )
    subject = Subject.objects.filter(pk=subject_id).first() if served else None
    if subject is None:
        return None
    return subject, ticket, request.POST.get("key"), request.POST.get("started_at")


@require_POST
def undo_last_vote(request, project, workflow):
    """Take back the volunteer's last answer (the Undo button, key U) and serve its subject again with a
    new ticket. Refusals are 4xx with the task section saying why (labeling.services.UndoError: 404
    nothing to undo, 403 not theirs, 409 too late), showing again the subject the page had, if any."""
    workflow = _workflow(request, project, workflow)
    participant = participant_for_request(request)
    template = "labeling/classify.html#task" if request.htmx else "labeling/classify.html"
    try:
        ratelimit.check(request, "vote", participant)
        result = undo_vote(workflow=workflow, participant=participant, vote_key=request.POST.get("vote", ""))
    except ratelimit.RateLimited as exc:
        again = _served_again(request, workflow, participant)
        context = _classify_context(
            request, workflow, participant, error=str(exc), again=again, slow_down=again is None
        )
        return _render(request, template, context, 429, exc.retry_after)
    except UndoError as exc:
        again = _served_again(request, workflow, participant)
        context = _classify_context(request, workflow, participant, error=str(exc), again=again)
        return _render(request, template, context, exc.status)
    except VoteError as exc:
        if getattr(exc, "project_closed", False):  # paused or finished (core.votes.refuse_if_closed)
            return closed_page(request, workflow, str(exc), exc.status)
        again = _served_again(request, workflow, participant)
        context = _classify_context(request, workflow, participant, error=str(exc), again=again)
        return _render(request, template, context, 400)
    serve = None if result.subject.is_retired else result.subject
    if not request.htmx:
        if serve is not None:
            request.session[f"undone-{workflow.pk}"] = serve.pk
        return redirect("labeling:classify", workflow.project.slug, workflow.slug)
    return render(request, template, _classify_context(request, workflow, participant, serve=serve))


@require_POST
def tutorial_seen(request, project, workflow):
    workflow = _workflow(request, project, workflow)
    request.session[f"tutorial-{workflow.pk}"] = True
    if request.htmx:
        return render(request, "core/empty.html")
    return redirect("labeling:classify", workflow.project.slug, workflow.slug)


def field_guide(request, project):
    project = volunteer_project(request, project)
    from core.workflow_content import FIELD_GUIDE_IMAGE_PX, field_guide_entries

    # Each active workflow's own guide (edited on its builder page; the built-in ZTF guide by default).
    guides = [
        {"workflow": w, "entries": field_guide_entries(w)}
        for w in project.workflows.filter(is_active=True, kind=Workflow.REAL_BOGUS).order_by("pk")
    ]
    guides = [g for g in guides if g["entries"]]
    return render(
        request,
        "labeling/field_guide.html",
        {"project": project, "guides": guides, "thumb_size": FIELD_GUIDE_IMAGE_PX},
    )


@login_required
def project_dashboard(request, project):
    project, role = project_for_request(request, project, READ_ROLES)
    subjects = Subject.objects.filter(project=project)
    context = {
        "project": project,
        "workflows": project.workflows.all(),
        "n_subjects": subjects.count(),
        "n_active": subjects.filter(status=Subject.ACTIVE).count(),
        "n_retired": subjects.filter(status=Subject.RETIRED).count(),
        "activity": vote_activity(project),
        "latest_votes": Vote.objects.filter(workflow__project=project, retracted=False)
        .select_related("subject", "workflow")
        .order_by("-created_at")[:20],
        "role": role,
    }
    if request.htmx:
        return render(request, "labeling/dashboard.html#stats", context)
    return render(request, "labeling/dashboard.html", context)
