"""Paid-panel pages: owners' batch pages and the annotators' task-link pages. Logic: tasklinks (and,
for what one task is, the handler of the workflow's kind: core.tasklink_kinds)."""

import io
import uuid
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from core import tasklink_kinds
from core.formats import parse_client_time
from core.models import Project, Workflow
from core.permissions import TEAM_ROLES, project_for_request
from core.ratelimit import client_address
from core.storage import file_response
from labeling.services import VoteError
from panels import services as tasklinks
from panels.models import Assignment, Batch
from panels.services import BatchError, TaskLinkError

# --- owners ------------------------------------------------------------------------------------


def _owned_batch(request, project_slug: str, batch_id: int) -> tuple[Project, Batch]:
    """Batches show panel worker ids and payments: owners only (other members 403, anyone else 404)."""
    project, _ = project_for_request(request, project_slug, TEAM_ROLES)
    batch = get_object_or_404(
        Batch.objects.select_related("workflow__project"), pk=batch_id, workflow__project=project
    )
    return project, batch


def _default_expiry():
    return (timezone.now() + timedelta(days=14)).replace(second=0, microsecond=0)


class BatchForm(forms.Form):
    workflow = forms.ModelChoiceField(queryset=Workflow.objects.none(), empty_label=None)
    name = forms.CharField(max_length=200, help_text="For you, e.g. “Pilot, 10 people”.")
    tasks_per_assignment = forms.IntegerField(
        min_value=1,
        max_value=tasklinks.MAX_TASKS_PER_ASSIGNMENT,
        initial=50,
        help_text="Tasks each person does (real/bogus: subjects; similarity: comparisons of 15).",
    )
    n_assignments = forms.IntegerField(
        min_value=1,
        max_value=tasklinks.MAX_ASSIGNMENTS,
        initial=10,
        label="Number of assignments",
        help_text="How many people can take part (one assignment each).",
    )
    gold_percent = forms.FloatField(
        min_value=0,
        max_value=100,
        initial=10,
        label="Gold share (%)",
        help_text="Share of each assignment that checks quality: expert-labelled subjects (real/bogus), or "
        "tasks that show the comparison image itself among the candidates (similarity).",
    )
    expires_at = forms.DateTimeField(
        label="Expires at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="After this nobody new can start; people already working get two more hours.",
    )
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}),
        required=False,
        help_text="Shown on the landing page before consent (plain text).",
    )
    payment_note = forms.CharField(
        max_length=300, required=False, help_text="e.g. “£2.40 for about 15 minutes, paid through Prolific”."
    )
    return_url_template = forms.CharField(
        max_length=500,
        required=False,
        label="Return URL template",
        help_text="Where the “Back to the panel” button goes. Placeholders: {code}, {worker_id}, {study_id}, "
        "{session_id}. Prolific: https://app.prolific.com/submissions/complete?cc=YOUR_STUDY_CODE",
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workflow"].queryset = project.workflows.filter(
            kind__in=tasklink_kinds.supported_kinds(), is_active=True
        )


@login_required
def batch_list(request, project):
    project, _ = project_for_request(request, project, TEAM_ROLES)
    batches = (
        Batch.objects.filter(workflow__project=project).select_related("workflow").order_by("-created_at")
    )
    return render(request, "panels/batch_list.html", {"project": project, "batches": batches})


@login_required
def batch_create(request, project):
    project, _ = project_for_request(request, project, TEAM_ROLES)
    form = BatchForm(request.POST or None, project=project, initial={"expires_at": _default_expiry()})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            batch = tasklinks.create_batch(
                workflow=data["workflow"],
                name=data["name"],
                tasks_per_assignment=data["tasks_per_assignment"],
                n_assignments=data["n_assignments"],
                gold_share=data["gold_percent"] / 100.0,
                expires_at=data["expires_at"],
                instructions=data["instructions"],
                payment_note=data["payment_note"],
                return_url_template=data["return_url_template"],
                created_by=request.user,
            )
        except BatchError as exc:
            field = {"gold_share": "gold_percent", "status": None, "review": None}.get(exc.field, exc.field)
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            messages.success(request, "Batch created. Paste one of the links below into your panel.")
            return redirect("panels:batch", project.slug, batch.pk)
    status = 400 if request.method == "POST" else 200
    has_workflows = form.fields["workflow"].queryset.exists()
    return render(
        request,
        "panels/batch_form.html",
        {"project": project, "form": form, "has_workflows": has_workflows},
        status=status,
    )


def _batch_context(request, project, batch):
    landing = request.build_absolute_uri(reverse("panels:landing", args=[tasklinks.batch_token(batch)]))
    tasklinks.release_abandoned(batch)
    qualities = tasklinks.batch_quality(batch)
    n_abandoned = sum(q.is_abandoned for q in qualities)
    return {
        "project": project,
        "batch": batch,
        "links": tasklinks.panel_links(batch, landing),
        "qualities": qualities,
        "n_started": len(qualities) - n_abandoned,
        "n_complete": sum(q.is_complete for q in qualities),
        "n_abandoned": n_abandoned,
        "problem": tasklinks.batch_problem_for_new_worker(batch),
    }


@login_required
def batch_detail(request, project, batch):
    project, batch = _owned_batch(request, project, batch)
    return render(request, "panels/batch_detail.html", _batch_context(request, project, batch))


@login_required
@require_POST
def batch_review(request, project, batch, assignment):
    project, batch = _owned_batch(request, project, batch)
    assignment = get_object_or_404(
        Assignment.objects.select_related("participant"), pk=assignment, batch=batch
    )
    assignment.batch = batch
    try:
        tasklinks.set_review(assignment, request.POST.get("decision", ""))
    except BatchError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    if request.htmx:
        quality = tasklinks.assignment_quality(assignment)
        return render(
            request,
            "panels/batch_detail.html#row",
            {"project": project, "batch": batch, "q": quality},
        )
    return redirect("panels:batch", project.slug, batch.pk)


@login_required
@require_POST
def batch_status(request, project, batch):
    project, batch = _owned_batch(request, project, batch)
    try:
        tasklinks.set_batch_status(batch, request.POST.get("status", ""))
    except BatchError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    messages.success(
        request, "Batch closed: nobody can go on." if batch.status == Batch.CLOSED else "Batch reopened."
    )
    return redirect("panels:batch", project.slug, batch.pk)


@login_required
@require_GET
def batch_payments_csv(request, project, batch):
    project, batch = _owned_batch(request, project, batch)
    tasklinks.release_abandoned(batch)
    out = io.StringIO()
    tasklinks.write_payment_csv(batch, out)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{project.slug}-batch-{batch.pk}-payments.csv"'
    response["Cache-Control"] = "no-store"
    return response


# --- annotators (no account, no login) ----------------------------------------------------------


def _unavailable(request, error: TaskLinkError, batch: Batch | None = None, status: int | None = None):
    if status is None:
        status = {TaskLinkError.INVALID: 404, TaskLinkError.ELSEWHERE: 403}.get(error.reason, 410)
    return render(
        request,
        "panels/unavailable.html",
        {"reason": error.reason, "message": error.message, "batch": batch},
        status=status,
    )


def _rate_limited(request, context=None, message=None, title=None):
    message = message or "You are answering faster than we can accept. Please wait a moment and answer again."
    if context is not None:
        context["error"] = message
        template = "panels/task.html#panel_task" if request.htmx else "panels/task.html"
        return render(request, template, context, status=429)
    return render(request, "panels/rate_limited.html", {"message": message, "title": title}, status=429)


START_RATE_LIMITED = (
    "Too many people are starting this study from your network right now. Nothing was recorded: "
    "please wait a minute, then go back and press Start again."
)


def _resume_key(request, batch: Batch) -> str | None:
    """This browser's resume key for the batch, from its signed cookie (None when absent or tampered)."""
    return request.get_signed_cookie(
        tasklinks.resume_cookie_name(batch), default=None, salt=tasklinks.resume_cookie_salt(batch)
    )


def _set_resume_cookie(response, token: str, batch: Batch, key: str):
    response.set_signed_cookie(
        tasklinks.resume_cookie_name(batch),
        key,
        salt=tasklinks.resume_cookie_salt(batch),
        max_age=tasklinks.RESUME_COOKIE_MAX_AGE,
        # Sent only to this batch's task-link pages, never readable by scripts.
        path=reverse("panels:landing", args=[token]),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    return response


def _existing_assignment_page(request, token, batch, assignment, resume_key, session_id):
    """A worker id that already has an assignment: go on only with this browser's key and panel session."""
    assignment.batch = batch
    released = tasklinks.release_if_abandoned(assignment)
    # Strangers learn nothing about someone else's assignment, not even that its place went back.
    if not tasklinks.may_resume(assignment, resume_key, session_id):
        return _unavailable(request, tasklinks.elsewhere_error(), batch)
    if released:
        return _unavailable(request, tasklinks.released_error(), batch)
    urls = _task_urls(token, assignment)
    return redirect(urls["done_url"] if assignment.completed_at else urls["task_url"])


def _batch_or_error(request, token):
    try:
        return tasklinks.batch_from_token(token), None
    except TaskLinkError as exc:
        return None, _unavailable(request, exc)


def _task_urls(token: str, assignment: Assignment) -> dict[str, str]:
    akey = tasklinks.assignment_token(assignment)
    return {
        "task_url": reverse("panels:task", args=[token, akey]),
        "vote_url": reverse("panels:vote", args=[token, akey]),
        "done_url": reverse("panels:done", args=[token, akey]),
    }


@require_GET
def panel_landing(request, token):
    """The link pasted into the panel. Without a worker id it is a preview that records nothing."""
    batch, error_page = _batch_or_error(request, token)
    if error_page:
        return error_page
    try:
        worker_id = tasklinks.clean_worker_id(request.GET.get("PROLIFIC_PID") or request.GET.get("worker_id"))
    except TaskLinkError as exc:
        return _unavailable(request, exc, batch, status=400)
    context = {
        "batch": batch,
        "workflow": batch.workflow,
        "project": batch.workflow.project,
        "token": token,
        "worker_id": worker_id,
        "study_id": tasklinks.clean_panel_field(request.GET.get("STUDY_ID")),
        "session_id": tasklinks.clean_panel_field(request.GET.get("SESSION_ID")),
    }
    if worker_id is None:
        try:
            context.update(tasklinks.kind_of(batch).preview_context(batch))
        except TaskLinkError as exc:
            return _unavailable(request, exc, batch)
        return render(request, "panels/preview.html", context)

    resume_key = _resume_key(request, batch)
    assignment = Assignment.objects.filter(batch=batch, worker_id=worker_id).first()
    if assignment:  # reopened link: resume where they left off, or show the code again
        return _existing_assignment_page(request, token, batch, assignment, resume_key, context["session_id"])
    problem = tasklinks.batch_problem_for_new_worker(batch)
    if problem:
        return _unavailable(request, problem, batch)
    response = render(request, "panels/landing.html", context)
    # The key exists before Start, so a double-submitted Start finds the same key in both requests.
    return response if resume_key else _set_resume_cookie(response, token, batch, tasklinks.new_resume_key())


@require_POST
def panel_start(request, token):
    batch, error_page = _batch_or_error(request, token)
    if error_page:
        return error_page
    try:
        worker_id = tasklinks.clean_worker_id(request.POST.get("worker_id"))
    except TaskLinkError as exc:
        return _unavailable(request, exc, batch, status=400)
    if worker_id is None:
        return _unavailable(
            request,
            TaskLinkError(
                TaskLinkError.INVALID, "This link has no worker id: open it from your panel's study page."
            ),
            batch,
            status=400,
        )
    if not tasklinks.allow_request(tasklinks.worker_scope(batch, worker_id)):
        return _rate_limited(request)
    study_id = tasklinks.clean_panel_field(request.POST.get("study_id"))
    session_id = tasklinks.clean_panel_field(request.POST.get("session_id"))
    resume_key = _resume_key(request, batch)
    existing = Assignment.objects.filter(batch=batch, worker_id=worker_id).first()
    if existing:
        return _existing_assignment_page(request, token, batch, existing, resume_key, session_id)
    if request.POST.get("consent") != "yes":
        context = {
            "batch": batch,
            "workflow": batch.workflow,
            "project": batch.workflow.project,
            "token": token,
            "worker_id": worker_id,
            "study_id": study_id,
            "session_id": session_id,
            "error": "Please tick the consent box to take part.",
        }
        return render(request, "panels/landing.html", context, status=400)
    allowed, retry_after = tasklinks.allow_start(batch, client_address(request))
    if not allowed:
        response = _rate_limited(request, message=START_RATE_LIMITED, title="Please wait a minute")
        response["Retry-After"] = str(retry_after)
        return response
    new_key = None if resume_key else tasklinks.new_resume_key()
    try:
        assignment, created = tasklinks.start_assignment(
            batch, worker_id, study_id, session_id, resume_key=resume_key or new_key
        )
    except TaskLinkError as exc:
        return _unavailable(request, exc, batch)
    if created:
        urls = _task_urls(token, assignment)
        response = redirect(urls["task_url"])
    else:  # another request started this worker id a moment earlier (a double click, or someone else)
        response = _existing_assignment_page(request, token, batch, assignment, resume_key, session_id)
    return _set_resume_cookie(response, token, batch, new_key) if new_key and created else response


def _assignment_or_error(request, token, akey, *, release=True):
    batch, error_page = _batch_or_error(request, token)
    if error_page:
        return None, error_page
    try:
        assignment = tasklinks.assignment_from_token(batch, akey)
    except TaskLinkError as exc:
        return None, _unavailable(request, exc, batch)
    # An abandoned assignment is released when next reached; assignment_problem() then refuses it.
    if release:
        tasklinks.release_if_abandoned(assignment)
    return assignment, None


def _task_context(token, assignment, state, item_id, feedback=None, error=None, data=None):
    """The task page of one item; `data`: a refused answer, shown again as it was (its selection, its
    start time) so nothing is lost. A new key each time: a refused answer stored nothing, and one item
    takes one answer per worker whatever the key."""
    batch = assignment.batch
    handler = tasklinks.kind_of(batch)
    urls = _task_urls(token, assignment)
    akey = tasklinks.assignment_token(assignment)

    def image_url(slot: str) -> str:
        handle = tasklinks.image_handle(assignment, item_id, slot)
        return reverse("panels:image", args=[token, akey, item_id, handle])

    started = parse_client_time(data.get("started_at")) if data is not None else None
    context = {
        "project": batch.workflow.project,
        "workflow": batch.workflow,
        "batch": batch,
        "assignment": assignment,
        "task_partial": handler.task_partial,
        "n_done": state.done,
        "n_total": state.total,
        "progress": state,
        "vote_key": uuid.uuid4(),
        "shown_at": (started or timezone.now()).isoformat(),
        "feedback": feedback,
        "error": error,
        "show_tutorial": False,
        "submit_url": urls["vote_url"],
        **urls,
    }
    if item_id is not None:
        context.update(handler.task_context(assignment, item_id, image_url=image_url, data=data))
    return context


def _task_response(request, context, status=200):
    template = "panels/task.html#panel_task" if request.htmx else "panels/task.html"
    return render(request, template, context, status=status)


@require_GET
def panel_task(request, token, akey):
    assignment, error_page = _assignment_or_error(request, token, akey)
    if error_page:
        return error_page
    try:
        state = tasklinks.progress(assignment)
    except TaskLinkError as exc:
        return _unavailable(request, exc, assignment.batch)
    if state.is_complete:
        tasklinks.sync_progress(assignment)
        return redirect(_task_urls(token, assignment)["done_url"])
    problem = tasklinks.assignment_problem(assignment)
    if problem:
        return _unavailable(request, problem, assignment.batch)
    item_id = tasklinks.current_item(assignment, state)
    return render(request, "panels/task.html", _task_context(token, assignment, state, item_id))


@require_POST
def panel_vote(request, token, akey):
    assignment, error_page = _assignment_or_error(request, token, akey)
    if error_page:
        return error_page
    urls = _task_urls(token, assignment)
    try:
        handler = tasklinks.kind_of(assignment.batch)
    except TaskLinkError as exc:
        return _unavailable(request, exc, assignment.batch)
    item_id = handler.item_from_post(request.POST)
    # A task link reaches only its own assignment's tasks; anything else does not exist for it.
    if item_id is None or not tasklinks.in_assignment(assignment, item_id):
        raise Http404("No such task.")
    problem = tasklinks.assignment_problem(assignment)
    if problem and assignment.completed_at is None:
        return _unavailable(request, problem, assignment.batch)

    if not tasklinks.allow_request(f"a{assignment.pk}"):
        state = tasklinks.progress(assignment)
        shown = item_id if item_id in state.pending else tasklinks.current_item(assignment, state)
        data = request.POST if shown == item_id else None
        return _rate_limited(request, _task_context(token, assignment, state, shown, data=data))

    feedback = error = None
    status = 400
    try:
        feedback, state = tasklinks.submit(
            assignment,
            item_id,
            request.POST,
            idempotency_key=request.POST.get("key", ""),
            started_at=parse_client_time(request.POST.get("started_at")),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=request.POST.get("viewport", ""),
        )
    except (VoteError, TaskLinkError) as exc:
        error = exc.message if isinstance(exc, TaskLinkError) else str(exc)
        status = getattr(exc, "status", 400)  # 409: the project is paused or finished
        state = tasklinks.progress(assignment)
    if state.is_complete:
        if request.htmx:
            return HttpResponseClientRedirect(urls["done_url"])
        return redirect(urls["done_url"])
    if error:
        # The refused answer's task again, as it was (its key, its selection), with the reason; htmx
        # swaps it in as an ordinary answer (200), a plain form post gets the full page with a 4xx.
        shown = item_id if item_id in state.pending else tasklinks.current_item(assignment, state)
        data = request.POST if shown == item_id else None
        context = _task_context(token, assignment, state, shown, error=error, data=data)
        return _task_response(request, context, status=200 if request.htmx else status)
    if not request.htmx:
        return redirect(urls["task_url"])
    item = tasklinks.current_item(assignment, state)
    return _task_response(request, _task_context(token, assignment, state, item, feedback=feedback))


@require_safe
def panel_image(request, token, akey, item, handle):
    """An image of one of the assignment's tasks under an opaque name (tasklinks.image_handle): the
    page never shows which subject a tile is, so a similarity check tile looks like any other. Read-only:
    a page loads 16 of these at once, and releasing abandoned places is the pages' job."""
    assignment, error_page = _assignment_or_error(request, token, akey, release=False)
    if error_page:
        return error_page
    try:
        name = tasklinks.image_name(assignment, item, handle)
    except TaskLinkError:
        name = None
    if not name:
        raise Http404("No such image.")
    # The stored file name is the subject's: an inline name of our own keeps it out of the headers too.
    return file_response(
        name, content_type="image/png", filename="image.png", cache_control="private, max-age=3600"
    )


@require_GET
def panel_done(request, token, akey):
    assignment, error_page = _assignment_or_error(request, token, akey)
    if error_page:
        return error_page
    if assignment.completed_at is None:
        # The code only after the last task.
        return redirect(_task_urls(token, assignment)["task_url"])
    code = tasklinks.completion_code(assignment)
    context = {
        "batch": assignment.batch,
        "project": assignment.batch.workflow.project,
        "assignment": assignment,
        "code": code,
        "return_url": tasklinks.return_url(assignment, code),
    }
    response = render(request, "panels/done.html", context)
    response["Cache-Control"] = "no-store"
    return response
