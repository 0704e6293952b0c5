"""Pages of the similarity workflow: the volunteer task, the owner's model page, search by image.

Thin: answers go through similarity.services.record_similarity_vote, tasks come from
similarity.selection, rounds from similarity.services.request_embedding_round.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import gems, ratelimit, tickets
from core.formats import parse_client_time, parse_id
from core.models import ModelVersion, Subject, Workflow
from core.participants import participant_for_request
from core.permissions import (
    OWNER_ROLES,
    READ_ROLES,
    project_for_request,
    volunteer_workflow,
    vote_refusal,
    workflow_for,
)
from core.views_projects import closed_page
from jobs.models import Job
from similarity import selection, services
from similarity.models import SimilarityTask, SimilarityVote
from similarity.upload import QueryImageError, read_query_image

# The key of each tile, row by row: the 5×3 grid mirrors three rows of the keyboard.
# The grid of tiles on the keyboard, row by row; the third row is Z–B so that G stays "Rare gem?", as on
# the real/bogus page, and N stays "none similar".
TILE_KEYS = ("1", "2", "3", "4", "5", "Q", "W", "E", "R", "T", "Z", "X", "C", "V", "B")


def _workflow(request, project_slug: str, workflow_slug: str) -> Workflow:
    # 404 for a private project's outsiders too: volunteering there is for its members.
    return volunteer_workflow(request, project_slug, workflow_slug, kind=Workflow.SIMILARITY)


def _task_context(
    request,
    workflow,
    participant,
    *,
    task=None,
    ticket=None,
    error=None,
    selected=(),
    key=None,
    started_at=None,
    slow_down=False,
):
    """The page's task section: `task` with its `ticket` shown again after a refused answer, else the
    next task, served with a new ticket (none while the participant must slow down)."""
    n_done = SimilarityVote.objects.filter(workflow=workflow, participant=participant).count()
    if task is None and not slow_down:
        task = selection.next_task(workflow, participant)
    if task is not None and ticket is None:
        ticket = services.task_ticket(task, participant)
    candidates = []
    if task is not None:
        subjects = Subject.objects.in_bulk(task.candidates)
        for position, subject_id in enumerate(task.candidates):
            subject = subjects.get(subject_id)
            if subject is None:
                continue
            candidates.append(
                {
                    "subject": subject,
                    "url": subject.image_url("image"),
                    "key": TILE_KEYS[position] if position < len(TILE_KEYS) else "",
                    "position": position + 1,
                    "selected": subject_id in selected,
                }
            )
    return {
        "project": workflow.project,
        "workflow": workflow,
        "task": task,
        "ticket": ticket,
        "slow_down": slow_down,
        "candidates": candidates,
        "comparison_url": task.comparison.image_url("image") if task else None,
        "selected_ids": ",".join(str(s) for s in selected),
        "n_done": n_done,
        "vote_key": key or uuid.uuid4(),
        "shown_at": started_at or timezone.now().isoformat(),
        "error": error,
        "show_tutorial": not request.session.get(f"sim-tutorial-{workflow.pk}"),
        "submit_url": reverse("similarity:submit", args=[workflow.project.slug, workflow.slug]),
        # The "Rare gem?" control (core.gems): volunteer pages only, not paid-panel task pages.
        "gems": True,
        "gem_note_max": gems.NOTE_MAX,
    }


def classify(request, project, workflow):
    workflow_obj = volunteer_workflow(request, project, workflow)
    if workflow_obj.kind != Workflow.SIMILARITY:
        return redirect(workflow_obj.get_absolute_url())
    refusal = vote_refusal(workflow_obj.project)
    if refusal:
        return closed_page(request, workflow_obj, refusal)
    participant = participant_for_request(request)
    try:
        ratelimit.check(request, "serve", participant)
    except ratelimit.RateLimited as exc:
        context = _task_context(request, workflow_obj, participant, error=str(exc), slow_down=True)
        return _render(request, "similarity/classify.html", context, 429, exc.retry_after)
    return render(request, "similarity/classify.html", _task_context(request, workflow_obj, participant))


def _render(request, template, context, status, retry_after=None):
    response = render(request, template, context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@require_POST
def submit(request, project, workflow):
    """Store the answer and serve the next task. Refusals are 4xx with the task section (htmx swaps
    them in, static/skyvote/similarity.js): 400 for an answer that makes no sense, 403 for a ticket
    that does not fit, 429 for too many answers; nothing is stored then."""
    workflow = _workflow(request, project, workflow)
    participant = participant_for_request(request)
    template = "similarity/classify.html#task" if request.htmx else "similarity/classify.html"
    task = SimilarityTask.objects.filter(pk=_int(request.POST.get("task")), workflow=workflow).first()
    ticket = request.POST.get("ticket", "")
    raw_chosen = request.POST.get("chosen", "")
    none_similar = request.POST.get("none") in ("1", "true", "on")
    try:
        ratelimit.check(request, "vote", participant)
        if task is None:
            raise services.SimilarityVoteError("This task no longer exists; here is a new one.")
        result = services.record_similarity_vote(
            task=task,
            participant=participant,
            chosen=raw_chosen,
            none_similar=none_similar,
            idempotency_key=request.POST.get("key", ""),
            started_at=parse_client_time(request.POST.get("started_at")),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=request.POST.get("viewport", ""),
            ticket=ticket,
        )
    except (services.SimilarityVoteError, tickets.TicketError, ratelimit.RateLimited) as exc:
        status = 429 if isinstance(exc, ratelimit.RateLimited) else getattr(exc, "status", 400)
        if getattr(exc, "project_closed", False):  # paused or finished: say so, serve nothing new
            return closed_page(request, workflow, str(exc), status)
        # Nothing is lost: the same task comes back with the same selection, key and ticket, but only
        # if it really was served to this participant: a refusal never serves a task the client chose.
        selected = []
        try:
            selected = services.parse_chosen(raw_chosen)
        except services.SimilarityVoteError:
            pass
        again = (
            task is not None
            and tickets.peek(
                ticket, workflow_id=workflow.pk, kind=tickets.TASK, item_id=task.pk, participant=participant
            )
            is not None
            and not SimilarityVote.objects.filter(task=task, participant=participant).exists()
        )
        context = _task_context(
            request,
            workflow,
            participant,
            task=task if again else None,
            ticket=ticket if again else None,
            error=str(exc),
            selected=selected if again else (),
            key=request.POST.get("key") if again else None,
            started_at=(request.POST.get("started_at") or None) if again else None,
        )
        return _render(request, template, context, status, getattr(exc, "retry_after", None))
    # Only now, with the answer accepted: a refused answer (its task never served) flags nothing. The
    # flag is about the comparison image, the one subject the volunteer was asked about.
    gem_message = gems.flag_with_vote(
        request,
        vote=result.vote,
        subject_id=task.comparison_id,
        participant=participant,
        gem=request.POST.get("gem"),
        note=request.POST.get("gem_note"),
    ).message
    if not request.htmx:
        if gem_message:
            messages.warning(request, gem_message)
        return redirect("similarity:classify", workflow.project.slug, workflow.slug)
    context = _task_context(request, workflow, participant)
    context["gem_message"] = gem_message
    return render(request, template, context)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@require_POST
def tutorial_seen(request, project, workflow):
    workflow = _workflow(request, project, workflow)
    request.session[f"sim-tutorial-{workflow.pk}"] = True
    if request.htmx:
        return render(request, "core/empty.html")
    return redirect("similarity:classify", workflow.project.slug, workflow.slug)


# ---------------------------------------------------------------------------------------------
# The owner's model page


def _curve_svg(points: list[tuple[float, float]], width: int = 420, height: int = 220) -> dict | None:
    """Polyline coordinates for y in [0.3, 1.0] (agreement) against x in the points' range."""
    points = [(x, y) for x, y in points if x is not None and y is not None]
    if not points:
        return None
    xs = [p[0] for p in points]
    x_low, x_high = min(xs), max(xs)
    span = (x_high - x_low) or 1.0
    pad = 30

    def sx(x):
        return pad + (x - x_low) / span * (width - 2 * pad) if len(points) > 1 else width / 2

    def sy(y):
        return height - pad - (min(max(y, 0.3), 1.0) - 0.3) / 0.7 * (height - 2 * pad)

    return {
        "width": width,
        "height": height,
        "polyline": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points),
        "dots": [{"x": f"{sx(x):.1f}", "y": f"{sy(y):.1f}", "label": f"{y:.3f}"} for x, y in points],
        "baseline_y": f"{sy(0.5):.1f}",
        "top_y": f"{sy(1.0):.1f}",
        "x_low": x_low,
        "x_high": x_high,
        "pad": pad,
        "right": width - pad,
        "bottom": height - pad,
        "tick_y": height - pad + 14,
        "label_y": height - pad + 27,
        "middle": width / 2,
    }


def _job_context(workflow):
    job = (
        Job.objects.filter(workflow=workflow, kind=Job.EMBED)
        .select_related("model_version")
        .order_by("-pk")
        .first()
    )
    return {"job": job, "log_tail": "\n".join((job.log or "").splitlines()[-8:]) if job else ""}


@login_required
def models_page(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.SIMILARITY)
    project_obj = workflow.project
    versions = list(
        ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.EMBEDDING).order_by("-version")
    )
    learning = _curve_svg(
        [(v.n_train, (v.metrics or {}).get("heldout_pairwise_agreement")) for v in reversed(versions)]
    )
    latest = next((v for v in versions if v.status == ModelVersion.ACTIVE), versions[0] if versions else None)
    epochs = None
    if latest is not None:
        history = (latest.config or {}).get("history") or {}
        start = (history.get("after_pretraining") or {}).get("heldout_agreement")
        rows = [(0, start)] + [
            (r.get("epoch"), r.get("heldout_agreement")) for r in history.get("finetune", [])
        ]
        epochs = _curve_svg(rows)
    context = {
        "project": project_obj,
        "workflow": workflow,
        "versions": versions,
        "active": services.active_embedding(workflow),
        "learning_curve": learning,
        "epoch_curve": epochs,
        "latest": latest,
        # The newest version's promotion decision is shown, promoted or not.
        "newest": versions[0] if versions else None,
        "role": role,
        "n_answers": SimilarityVote.objects.filter(workflow=workflow).count(),
        "n_tasks": SimilarityTask.objects.filter(workflow=workflow).count(),
        "answers_until_round": max(0, workflow.train_every - services.answers_since_last_round(workflow)),
        "pairs": services.pair_rate_rows(workflow),
        **_job_context(workflow),
    }
    return render(request, "similarity/models.html", context)


@login_required
def job_status(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.SIMILARITY)
    context = {"project": workflow.project, "workflow": workflow, **_job_context(workflow)}
    return render(request, "similarity/models.html#job", context)


@login_required
@require_POST
def train_now(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.SIMILARITY)
    project_obj = workflow.project
    services.request_embedding_round(workflow, user=request.user, reason="owner")
    if request.htmx:
        return render(
            request,
            "similarity/models.html#job",
            {"project": project_obj, "workflow": workflow, **_job_context(workflow)},
        )
    return redirect("similarity:models", project_obj.slug, workflow.slug)


# ---------------------------------------------------------------------------------------------
# Search by image


def resolve_query_subject(project, workflow, value: str) -> Subject:
    """A subject of the project by primary key or external id."""
    value = (value or "").strip()
    queryset = Subject.objects.filter(project=project)
    subject = queryset.filter(external_id=value).first()
    if subject is None and (pk := parse_id(value)) is not None:
        subject = queryset.filter(pk=pk).first()
    if subject is None:
        raise QueryImageError(f"No subject '{value[:60]}' in this project.")
    return subject


@login_required
def search_page(request, project):
    project_obj, _ = project_for_request(request, project, READ_ROLES)
    workflows = list(Workflow.objects.filter(project=project_obj, kind=Workflow.SIMILARITY).order_by("pk"))
    if not workflows:
        raise Http404("This project has no similarity workflow.")
    chosen_slug = request.POST.get("workflow") or request.GET.get("workflow") or workflows[0].slug
    workflow = next((w for w in workflows if w.slug == chosen_slug), workflows[0])
    context = {
        "project": project_obj,
        "workflows": workflows,
        "workflow": workflow,
        "top_k": 12,
        "subject_value": request.GET.get("subject", ""),
        "active": services.active_embedding(workflow),
    }
    if context["active"] is None:
        context["no_embedding"] = services.no_embedding_message(workflow)
    query_value = request.POST.get("subject") or request.GET.get("subject")
    if request.method == "POST" or query_value:
        try:
            top_k = max(1, min(int(request.POST.get("top_k") or request.GET.get("top_k") or 12), 100))
        except ValueError:
            top_k = 12
        context["top_k"] = top_k
        try:
            upload = request.FILES.get("file")
            if upload is not None:
                array = read_query_image(upload)
                hits, version = services.search(workflow, array=array, top_k=top_k)
                context["query_name"] = upload.name
            elif query_value:
                subject = resolve_query_subject(project_obj, workflow, query_value)
                hits, version = services.search(workflow, subject=subject, top_k=top_k)
                context["query_subject"] = subject
                context["subject_value"] = query_value
            else:
                raise QueryImageError("Upload an image (FITS, PNG or JPEG) or give a subject id.")
            context.update({"hits": hits, "version": version})
        except (QueryImageError, services.EmbeddingUnavailable) as exc:
            context["error"] = str(exc)
    return render(request, "similarity/search.html", context)
