"""Paid panels: batches, task links, assignments, completion codes, worker quality, payments.

A project owner creates a Batch for a workflow. The panel (Prolific or any panel that sends people to a
URL and takes a completion code back) gets one signed link per batch; a worker id in the query string
identifies the person. Each worker gets one Assignment per batch: a fixed, shuffled list of tasks with
gold or check tasks among them. What a task is belongs to the workflow's kind: its handler, found in
core.tasklink_kinds, chooses the tasks, stores answers through the kind's own vote service (participant
kind "worker", source "panel") and says which answers were checks (panels.kinds for real/bogus,
similarity.panels for similarity). Everything else here is the same for every kind.

The study link and a worker id are not secret (anyone may learn both), so they never open an existing
assignment by themselves. The browser that starts gets a random resume key in a signed cookie (the
assignment stores only its hash), and every task page carries the worker's own signed assignment link
(`akey`). Reopening the study link resumes only with that cookie, and only with the same panel session id
when the panel sends one; the personal link works from any browser. Completion codes are an HMAC of the
assignment under a key derived from SECRET_KEY, so they cannot be guessed and need no storage.

Places are guarded two ways against made-up worker ids: new starts are rate-limited per client address
and per batch, and an unfinished assignment without an answer for `abandon_after()` is released (kept
with its votes, marked `released_at`): its place goes back to the batch and it can no longer be resumed.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import secrets
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Exists
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from core import ratelimit, tasklink_kinds
from core.formats import FormulaSafeCsvWriter
from core.models import Participant, Workflow
from core.tasklink_kinds import PanelAnswer, TaskKind
from panels.kinds import (  # noqa: F401 (the real/bogus parts, still reachable under their old names)
    OBVIOUS_SUBTYPES,
    TASKS_PER_ATTENTION_CHECK,
    choose_subjects,
    is_attention_check,
)
from panels.models import Assignment, Batch

BATCH_TOKEN_SALT = "skyvote.tasklinks.batch"
ASSIGNMENT_TOKEN_SALT = "skyvote.tasklinks.assignment"
COMPLETION_CODE_SALT = "skyvote.tasklinks.completion-code"
RESUME_COOKIE_SALT = "skyvote.tasklinks.resume"
# Long enough to see the completion code again later; resuming stops far earlier (abandon_after()).
RESUME_COOKIE_MAX_AGE = 30 * 24 * 3600

MAX_TASKS_PER_ASSIGNMENT = 500
MAX_ASSIGNMENTS = 10_000
# Workers who started before the expiry may finish within this grace period; nobody new may start.
EXPIRY_GRACE = timedelta(hours=2)
# Median seconds per task below this is flagged "too fast": no task can be judged in under a second.
TOO_FAST_SECONDS = 1.0
IMAGE_HANDLE_SALT = "skyvote.tasklinks.image"
# Default per-worker rate limit: at most this many answers per window (seconds).
DEFAULT_RATE_LIMIT = (3, 1)
# New assignments (requests, per seconds) from one client address (an IPv6 /64 counts as one address)
# and per batch; SKYVOTE_RATE_LIMITS["panel_start"] overrides them. A real launch stays far below both:
# each panel participant starts once, from their own connection, and panels fill places over minutes; a
# script making up worker ids meets the address limit at once.
DEFAULT_START_LIMITS = {"address": (10, 60), "batch": (120, 60)}
# An unfinished assignment with no answer for this long gives its place back (see abandon_after()).
DEFAULT_ABANDON_AFTER = timedelta(minutes=30)

# Panel worker ids: letters and digits first (no spreadsheet formulas in the payment CSV), then a few
# separators panels use. Prolific ids are 24 hex digits.
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,199}$")
RETURN_URL_PLACEHOLDERS = ("{code}", "{worker_id}", "{study_id}", "{session_id}")
PROLIFIC_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
GENERIC_QUERY = "worker_id=WORKER_ID"


class TaskLinkError(Exception):
    """A task link cannot be used right now; `reason` picks the page, the message says why in words."""

    INVALID, EXPIRED, FULL, CLOSED, EXHAUSTED = "invalid", "expired", "full", "closed", "exhausted"
    # Another browser or panel session holds this worker id's assignment; the place was given back.
    ELSEWHERE, RELEASED = "elsewhere", "released"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class BatchError(ValueError):
    """The owner's batch settings are not usable; the message says which field and why."""

    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


# --- batches -------------------------------------------------------------------------------


def validate_return_url_template(template: str) -> str:
    template = (template or "").strip()
    if not template:
        return ""
    if not re.match(r"^https?://[^\s/]+", template, flags=re.IGNORECASE):
        raise BatchError(
            "return_url_template", "The return URL must start with https:// (or http://) and name a host."
        )
    if any(c.isspace() for c in template):
        raise BatchError("return_url_template", "The return URL must not contain spaces.")
    return template


def create_batch(
    *,
    workflow: Workflow,
    name: str,
    tasks_per_assignment: int,
    n_assignments: int,
    gold_share: float,
    expires_at: datetime | None,
    instructions: str = "",
    payment_note: str = "",
    return_url_template: str = "",
    created_by=None,
) -> Batch:
    handler = tasklink_kinds.task_kind(workflow.kind)
    if handler is None:
        raise BatchError("workflow", f"Task links do not support {workflow.get_kind_display()} workflows.")
    name = (name or "").strip()
    if not name:
        raise BatchError("name", "Give the batch a name, e.g. 'Pilot, 10 people'.")
    if not 1 <= tasks_per_assignment <= MAX_TASKS_PER_ASSIGNMENT:
        raise BatchError(
            "tasks_per_assignment", f"Tasks per assignment must be between 1 and {MAX_TASKS_PER_ASSIGNMENT}."
        )
    if not 1 <= n_assignments <= MAX_ASSIGNMENTS:
        raise BatchError(
            "n_assignments", f"The number of assignments must be between 1 and {MAX_ASSIGNMENTS}."
        )
    if not 0.0 <= gold_share <= 1.0:
        raise BatchError("gold_share", "The gold share must be between 0 % and 100 %.")
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            expires_at = timezone.make_aware(expires_at)
        if expires_at <= timezone.now():
            raise BatchError("expires_at", "The expiry date is in the past; pick a later date.")
    return_url_template = validate_return_url_template(return_url_template)
    # Enough subjects, gold where the kind needs it: the kind's own COUNT queries, never a list of ids.
    problem = handler.batch_problem(
        workflow, tasks_per_assignment=tasks_per_assignment, gold_share=gold_share
    )
    if problem:
        raise BatchError(*problem)
    return Batch.objects.create(
        workflow=workflow,
        name=name[:200],
        tasks_per_assignment=tasks_per_assignment,
        n_assignments=n_assignments,
        gold_share=gold_share,
        expires_at=expires_at,
        instructions=instructions or "",
        payment_note=(payment_note or "")[:300],
        return_url_template=return_url_template,
        created_by=created_by,
    )


def set_batch_status(batch: Batch, status: str) -> None:
    if status not in (Batch.OPEN, Batch.CLOSED):
        raise BatchError("status", "A batch is either open or closed.")
    batch.status = status
    batch.save(update_fields=["status"])


# --- tokens and links ------------------------------------------------------------------------


def _created_stamp(batch: Batch) -> int:
    # Binds a token to this very batch row, not to a reused primary key after a database reset.
    return int(batch.created_at.timestamp())


def batch_token(batch: Batch) -> str:
    # Signer, not dumps: no timestamp, so a batch has one stable link (expiry lives on the batch).
    return signing.Signer(salt=BATCH_TOKEN_SALT).sign_object({"b": batch.pk, "c": _created_stamp(batch)})


def batch_from_token(token: str) -> Batch:
    invalid = TaskLinkError(
        TaskLinkError.INVALID, "This task link is not valid. Check that it was copied whole."
    )
    try:
        payload = signing.Signer(salt=BATCH_TOKEN_SALT).unsign_object(token)
    except signing.BadSignature:
        raise invalid
    if not isinstance(payload, dict):
        raise invalid
    batch = Batch.objects.select_related("workflow__project").filter(pk=payload.get("b")).first()
    if batch is None or _created_stamp(batch) != payload.get("c"):
        raise invalid
    return batch


def assignment_token(assignment: Assignment) -> str:
    return signing.Signer(salt=ASSIGNMENT_TOKEN_SALT).sign_object(
        {"a": assignment.pk, "b": assignment.batch_id}
    )


def assignment_from_token(batch: Batch, token: str) -> Assignment:
    invalid = TaskLinkError(TaskLinkError.INVALID, "This task page is not valid. Open the study link again.")
    try:
        payload = signing.Signer(salt=ASSIGNMENT_TOKEN_SALT).unsign_object(token)
    except signing.BadSignature:
        raise invalid
    if not isinstance(payload, dict) or payload.get("b") != batch.pk:
        raise invalid
    assignment = (
        Assignment.objects.select_related("participant").filter(pk=payload.get("a"), batch=batch).first()
    )
    if assignment is None:
        raise invalid
    assignment.batch = batch
    return assignment


def panel_links(batch: Batch, landing_url: str) -> dict[str, str]:
    """The two links to paste into a panel; `landing_url` is the absolute URL of the batch's landing page."""
    return {
        "prolific": f"{landing_url}?{PROLIFIC_QUERY}",
        "generic": f"{landing_url}?{GENERIC_QUERY}",
    }


def clean_worker_id(value: str | None) -> str | None:
    """The worker id from a query string, or None for a preview (missing, or a placeholder left unfilled)."""
    value = (value or "").strip()
    if not value or value.upper() == "WORKER_ID" or any(c in value for c in "{}%[]<>"):
        return None
    if not WORKER_ID_RE.match(value):
        raise TaskLinkError(
            TaskLinkError.INVALID,
            "The worker id in this link has characters we do not accept "
            "(letters, digits and _ . : @ + - only, at most 200). Please contact the researchers.",
        )
    return value


def clean_panel_field(value: str | None) -> str:
    """STUDY_ID / SESSION_ID: kept when they look like ids, dropped when a placeholder or odd."""
    value = (value or "").strip()
    return value if value and WORKER_ID_RE.match(value) else ""


# --- availability --------------------------------------------------------------------------


def batch_problem_for_new_worker(batch: Batch, now: datetime | None = None) -> TaskLinkError | None:
    """Why a new worker cannot start now, or None."""
    now = now or timezone.now()
    if batch.status == Batch.CLOSED or not batch.workflow.is_active:
        return TaskLinkError(
            TaskLinkError.CLOSED, "The researchers have closed this study. Thank you for your interest."
        )
    if batch.expires_at and now >= batch.expires_at:
        return TaskLinkError(
            TaskLinkError.EXPIRED, "This study has expired and no longer takes new participants."
        )
    if holding_places(batch, now).count() >= batch.n_assignments:
        return TaskLinkError(
            TaskLinkError.FULL,
            "This study is full: all places have been taken. Please return it on your panel.",
        )
    return None


def assignment_problem(assignment: Assignment, now: datetime | None = None) -> TaskLinkError | None:
    """Why a started, unfinished assignment cannot go on, or None."""
    batch = assignment.batch
    now = now or timezone.now()
    if assignment.released_at is not None:
        return released_error()
    if batch.status == Batch.CLOSED or not batch.workflow.is_active:
        return TaskLinkError(
            TaskLinkError.CLOSED,
            "The researchers have closed this study. Your answers so far are saved; please contact them.",
        )
    if batch.expires_at and now >= batch.expires_at + EXPIRY_GRACE:
        return TaskLinkError(
            TaskLinkError.EXPIRED,
            "This study has expired. Your answers so far are saved; please contact the researchers.",
        )
    return None


# --- assignments ---------------------------------------------------------------------------


def _worker_participant(batch: Batch, worker_id: str) -> Participant:
    """The same panel worker in another batch of this project is the same participant (skill carries over);
    between projects they are never linked."""
    existing = (
        Participant.objects.filter(
            kind=Participant.WORKER,
            external_id=worker_id,
            assignments__batch__workflow__project_id=batch.workflow.project_id,
        )
        .order_by("pk")
        .first()
    )
    return existing or Participant.objects.create(kind=Participant.WORKER, external_id=worker_id)


def start_assignment(
    batch: Batch,
    worker_id: str,
    study_id: str = "",
    session_id: str = "",
    rng: random.Random | None = None,
    *,
    resume_key: str = "",
) -> tuple[Assignment, bool]:
    """The worker id's assignment in this batch: the existing one or a new one (whose browser may resume
    it with `resume_key`). Who may go on with an existing one is the caller's check (`may_resume`)."""
    existing = (
        Assignment.objects.select_related("participant").filter(batch=batch, worker_id=worker_id).first()
    )
    if existing:
        existing.batch = batch
        return existing, False
    try:
        with transaction.atomic():
            # The batch row lock serialises starts, so a batch never hands out more than n_assignments.
            locked = Batch.objects.select_for_update().select_related("workflow__project").get(pk=batch.pk)
            release_abandoned(locked)
            problem = batch_problem_for_new_worker(locked)
            if problem:
                raise problem
            participant = _worker_participant(locked, worker_id)
            subject_ids = kind_of(locked).choose_items(locked, participant, rng or random.Random())
            if not subject_ids:
                raise TaskLinkError(
                    TaskLinkError.EXHAUSTED,
                    "There is nothing left to label in this study right now. Please return it on your panel.",
                )
            assignment = Assignment.objects.create(
                batch=locked,
                participant=participant,
                worker_id=worker_id,
                study_id=study_id[:200],
                session_id=session_id[:200],
                subject_ids=subject_ids,
                resume_key_hash=resume_key_hash(resume_key) if resume_key else "",
            )
    except IntegrityError:  # the same worker started twice at once: the first one wins
        assignment = Assignment.objects.select_related("participant").get(batch=batch, worker_id=worker_id)
        assignment.batch = batch
        return assignment, False
    assignment.batch = batch
    return assignment, True


# --- resuming and abandoned places ------------------------------------------------------------


def resume_cookie_name(batch: Batch) -> str:
    return f"skyvote_panel_{batch.pk}"


def resume_cookie_salt(batch: Batch) -> str:
    # Bound to this batch row: a cookie of another batch (or of a reused batch id) is not a key here.
    return f"{RESUME_COOKIE_SALT}:{batch.pk}:{_created_stamp(batch)}"


def new_resume_key() -> str:
    return secrets.token_urlsafe(32)


def resume_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def may_resume(assignment: Assignment, resume_key: str | None, session_id: str = "") -> bool:
    """Whether this browser (its resume key) and panel session may go on with the assignment from the
    public study link. The personal assignment link (`akey`) needs no such check: it is the secret."""
    if not resume_key or not assignment.resume_key_hash:
        return False
    if not constant_time_compare(assignment.resume_key_hash, resume_key_hash(resume_key)):
        return False
    # A panel session is one attempt at the study (Prolific's SESSION_ID): another one is someone else,
    # or a new attempt after returning the study, and must not pick up this one.
    return not assignment.session_id or constant_time_compare(assignment.session_id, session_id or "")


def elsewhere_error() -> TaskLinkError:
    return TaskLinkError(
        TaskLinkError.ELSEWHERE,
        "This participant id has already started this study in another browser or panel session, so we "
        "cannot open it here. To continue, open the personal task link you saw on your task page (the "
        "address of that page), or contact the researchers through your panel.",
    )


def released_error() -> TaskLinkError:
    minutes = round(abandon_after().total_seconds() / 60)
    return TaskLinkError(
        TaskLinkError.RELEASED,
        f"Your place in this study was given back because no answer arrived for {minutes} minutes. "
        "Your answers so far are saved; please contact the researchers through your panel.",
    )


def abandon_after() -> timedelta:
    """How long an unfinished assignment may go without an answer before its place goes back to the batch."""
    value = getattr(settings, "SKYVOTE_PANEL_ABANDON_AFTER", DEFAULT_ABANDON_AFTER)
    return value if isinstance(value, timedelta) else timedelta(minutes=float(value))


def _stale(batch: Batch, qs, now: datetime):
    """Unfinished, unreleased assignments of the batch with no answer since the cutoff (nor a start
    after it)."""
    cutoff = now - abandon_after()
    recent = kind_of(batch).recent_answers(batch.workflow, cutoff)
    return qs.filter(completed_at__isnull=True, released_at__isnull=True, started_at__lt=cutoff).exclude(
        Exists(recent)
    )


def holding_places(batch: Batch, now: datetime | None = None):
    """The assignments that count against n_assignments: neither released nor due to be."""
    now = now or timezone.now()
    live = Assignment.objects.filter(batch=batch, released_at__isnull=True)
    return live.exclude(pk__in=_stale(batch, Assignment.objects.filter(batch=batch), now).values("pk"))


def release_abandoned(batch: Batch, now: datetime | None = None) -> int:
    """Mark the batch's abandoned assignments released; the rows and their votes stay for the record."""
    now = now or timezone.now()
    return _stale(batch, Assignment.objects.filter(batch=batch), now).update(released_at=now)


def release_if_abandoned(assignment: Assignment, now: datetime | None = None) -> bool:
    """Release this one assignment when it is abandoned (checked whenever it is reached); True if released."""
    if assignment.released_at is None:
        now = now or timezone.now()
        if _stale(assignment.batch, Assignment.objects.filter(pk=assignment.pk), now).update(released_at=now):
            assignment.released_at = now
    return assignment.released_at is not None


@dataclass
class Progress:
    total: int
    done: int
    pending: list[int]

    @property
    def is_complete(self) -> bool:
        return not self.pending

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def kind_of(batch: Batch) -> TaskKind:
    """The handler of the batch's kind of task (core.tasklink_kinds)."""
    handler = tasklink_kinds.task_kind(batch.workflow.kind)
    if handler is None:  # a batch made before its kind lost its handler: nothing can go on
        raise TaskLinkError(TaskLinkError.INVALID, "This study's kind of task is not supported any more.")
    return handler


def progress(assignment: Assignment) -> Progress:
    """Answered items count as done; an item deleted since the assignment began cannot be answered
    and counts as done too, so nobody is stuck."""
    total = len(assignment.subject_ids)
    pending = kind_of(assignment.batch).pending(assignment)
    return Progress(total=total, done=total - len(pending), pending=pending)


def current_item(assignment: Assignment, state: Progress | None = None) -> int | None:
    state = state or progress(assignment)
    return state.pending[0] if state.pending else None


def in_assignment(assignment: Assignment, item_id) -> bool:
    try:
        return int(item_id) in {int(i) for i in assignment.subject_ids}
    except (TypeError, ValueError):
        return False


def image_handle(assignment: Assignment, item_id: int, slot: str) -> str:
    """The opaque name of one image of an item on the task page: per assignment, item and slot, so two
    tiles showing the same subject (a similarity check) have different URLs, and none names the subject."""
    return salted_hmac(
        IMAGE_HANDLE_SALT, f"{assignment.pk}:{int(item_id)}:{slot}", algorithm="sha256"
    ).hexdigest()[:24]


def image_name(assignment: Assignment, item_id: int, handle: str) -> str | None:
    """The stored PNG behind a handle of `image_handle`, or None (not this assignment's)."""
    if not in_assignment(assignment, item_id):
        return None
    for slot, name in kind_of(assignment.batch).images(assignment, int(item_id)).items():
        if constant_time_compare(handle, image_handle(assignment, item_id, slot)):
            return name
    return None


def sync_progress(assignment: Assignment) -> Progress:
    with transaction.atomic():
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        locked.batch = assignment.batch
        state = progress(locked)
        fields = []
        if locked.n_done != state.done:
            locked.n_done = state.done
            fields.append("n_done")
        if state.is_complete and locked.completed_at is None:
            locked.completed_at = timezone.now()
            fields.append("completed_at")
        if fields:
            locked.save(update_fields=fields)
    assignment.n_done, assignment.completed_at = locked.n_done, locked.completed_at
    return state


def submit(
    assignment: Assignment,
    item_id: int,
    data,
    *,
    idempotency_key,
    started_at: datetime | None = None,
    user_agent: str = "",
    viewport: str = "",
):
    """Store one answer of an assignment through its kind's own vote service (exactly once per
    idempotency key and per item); `data` is the answer form. Returns (feedback for the page or None,
    progress). Raises TaskLinkError for an item not in the assignment and core.votes.VoteError for an
    answer that makes no sense."""
    if not in_assignment(assignment, item_id):
        raise TaskLinkError(TaskLinkError.INVALID, "This task is not part of your tasks.")
    feedback = kind_of(assignment.batch).submit(
        assignment,
        int(item_id),
        data,
        idempotency_key=idempotency_key,
        started_at=started_at,
        user_agent=user_agent,
        viewport=viewport,
    )
    return feedback, sync_progress(assignment)


def submit_answer(
    assignment: Assignment,
    *,
    subject_id: int,
    answer: str,
    idempotency_key,
    started_at: datetime | None = None,
    user_agent: str = "",
    viewport: str = "",
):
    """A real/bogus answer (`answer`: the answer key) of an assignment; see submit()."""
    return submit(
        assignment,
        subject_id,
        {"answer": answer},
        idempotency_key=idempotency_key,
        started_at=started_at,
        user_agent=user_agent,
        viewport=viewport,
    )


# --- rate limiting ---------------------------------------------------------------------------


def allow_request(scope: str, rate: tuple[int, float] | None = None) -> bool:
    """At most N requests per window for one scope; `rate` is (N, window seconds), by default the
    per-worker SKYVOTE_PANEL_RATE_LIMIT. Counted by the site's one limiter (core.ratelimit), in the
    shared cache when CACHE_URL is set."""
    limit, window = rate or getattr(settings, "SKYVOTE_PANEL_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    allowed, _retry_after = ratelimit.hit(f"tasklinks:{scope}", "", int(limit), max(1, round(window)))
    return allowed


def worker_scope(batch: Batch, worker_id: str) -> str:
    return salted_hmac("skyvote.tasklinks.rate", f"{batch.pk}:{worker_id}").hexdigest()[:24]


def _address_key(address: str | None) -> str:
    return ratelimit.address_key(address)


def start_limits() -> dict[str, tuple[int, int]]:
    return {**DEFAULT_START_LIMITS, **ratelimit.limits_for("panel_start")}


def allow_start(batch: Batch, address: str | None) -> tuple[bool, int]:
    """Whether a new assignment may start now, per client address (any batch) and per batch:
    (allowed, seconds to wait when not)."""
    limits = start_limits()
    # In this order, and stopping at the first refusal: a script refused for its address does not
    # also use up the batch's count and lock out real participants arriving from elsewhere.
    for kind, who in (("address", _address_key(address)), ("batch", f"{batch.pk}:{_created_stamp(batch)}")):
        count, per_s = limits[kind]
        allowed, retry_after = ratelimit.hit(f"panel_start:{kind}", who, int(count), int(per_s))
        if not allowed:
            return False, retry_after
    return True, 0


# --- completion codes ------------------------------------------------------------------------


def completion_code(assignment: Assignment) -> str:
    """A 10-character code per assignment: HMAC of the assignment under a SECRET_KEY-derived key."""
    digest = salted_hmac(
        COMPLETION_CODE_SALT,
        f"{assignment.pk}:{assignment.batch_id}:{assignment.worker_id}",
        algorithm="sha256",
    ).digest()
    return base64.b32encode(digest).decode()[:10]


def verify_completion_code(assignment: Assignment, code: str) -> bool:
    return assignment.completed_at is not None and constant_time_compare(
        completion_code(assignment), (code or "").strip().upper()
    )


def return_url(assignment: Assignment, code: str) -> str:
    """The panel's completion URL from the batch's template; placeholders are URL-encoded."""
    template = assignment.batch.return_url_template
    if not template:
        return ""
    values = {
        "{code}": code,
        "{worker_id}": assignment.worker_id,
        "{study_id}": assignment.study_id,
        "{session_id}": assignment.session_id,
    }
    url = template
    for placeholder, value in values.items():
        url = url.replace(placeholder, quote(value, safe=""))
    return url


# --- quality and payment ---------------------------------------------------------------------


@dataclass
class WorkerQuality:
    assignment: Assignment
    total: int
    done: int
    n_answered: int = 0
    n_skipped: int = 0
    n_gold: int = 0
    n_gold_correct: int = 0
    n_attention: int = 0
    n_attention_passed: int = 0
    median_seconds: float | None = None
    suggestion: str = ""
    reasons: list[str] = field(default_factory=list)

    @property
    def gold_accuracy(self) -> float | None:
        return self.n_gold_correct / self.n_gold if self.n_gold else None

    @property
    def too_fast(self) -> bool:
        return self.median_seconds is not None and self.median_seconds < TOO_FAST_SECONDS

    @property
    def is_complete(self) -> bool:
        return self.assignment.completed_at is not None

    @property
    def is_abandoned(self) -> bool:
        return self.assignment.released_at is not None and not self.is_complete

    @property
    def status(self) -> str:
        return "complete" if self.is_complete else "abandoned" if self.is_abandoned else "in progress"


def _median_seconds(answers: list[PanelAnswer]) -> float | None:
    """Median time per task from the server's clock: gaps between consecutive answers (robust to a
    pause, and to a worker's wrong clock); a single answer uses its own shown→answered time."""
    times = sorted(a.created_at for a in answers)
    if len(times) >= 2:
        return statistics.median((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    if answers and answers[0].started_at and answers[0].finished_at:
        return max(0.0, (answers[0].finished_at - answers[0].started_at).total_seconds())
    return None


def _suggest(q: WorkerQuality) -> None:
    if q.is_abandoned:
        # Unfinished for good: whether partial work earns anything is the owner's call.
        q.suggestion = "review"
        q.reasons.append(f"abandoned after {q.done} of {q.total}: its place went back to the batch")
        return
    if not q.is_complete:
        q.suggestion = "wait"
        q.reasons.append("not finished yet")
        return
    reject, review = [], []
    if q.n_attention and q.n_attention_passed < q.n_attention:
        failed = q.n_attention - q.n_attention_passed
        # One slip is human; more than half failed is not paying attention.
        (reject if failed * 2 > q.n_attention or q.n_attention == 1 else review).append(
            f"failed {failed} of {q.n_attention} attention checks"
        )
    accuracy = q.gold_accuracy
    if accuracy is not None and q.n_gold >= 4 and accuracy <= 0.5:
        reject.append(f"gold accuracy {accuracy:.0%} is chance level")
    elif accuracy is not None and accuracy < 0.7:
        review.append(f"gold accuracy {accuracy:.0%}")
    if q.too_fast:
        review.append(f"median {q.median_seconds:.1f} s per task (too fast)")
    if q.done and q.n_skipped * 2 > q.done:
        review.append(f"skipped {q.n_skipped} of {q.done}")
    if reject:
        q.suggestion, q.reasons = "reject", reject + review
    elif review:
        q.suggestion, q.reasons = "review", review
    else:
        q.suggestion = "approve"


def batch_quality(batch: Batch) -> list[WorkerQuality]:
    """Quality of every assignment of a batch: one query for the assignments, the kind's for the answers."""
    assignments = list(batch.assignments.select_related("participant").order_by("started_at", "pk"))
    for a in assignments:
        a.batch = batch
    answers = kind_of(batch).answers(batch, assignments) if assignments else {}
    return [_quality(a, answers.get(a.pk, [])) for a in assignments]


def assignment_quality(assignment: Assignment) -> WorkerQuality:
    answers = kind_of(assignment.batch).answers(assignment.batch, [assignment])
    return _quality(assignment, answers.get(assignment.pk, []))


def _quality(assignment: Assignment, answers: list[PanelAnswer]) -> WorkerQuality:
    q = WorkerQuality(assignment=assignment, total=len(assignment.subject_ids), done=assignment.n_done)
    for answer in answers:
        if answer.skipped:
            q.n_skipped += 1
            continue
        q.n_answered += 1
        if answer.gold_correct is not None:
            q.n_gold += 1
            q.n_gold_correct += answer.gold_correct
            if answer.attention_check:
                q.n_attention += 1
                q.n_attention_passed += answer.gold_correct
    q.median_seconds = _median_seconds(answers)
    _suggest(q)
    return q


REVIEW_DECISIONS = ("approved", "rejected", "")


def set_review(assignment: Assignment, decision: str) -> None:
    if decision not in REVIEW_DECISIONS:
        raise BatchError("review", "The decision is 'approved', 'rejected' or empty.")
    assignment.review = decision
    assignment.save(update_fields=["review"])


PAYMENT_COLUMNS = [
    "worker_id",
    "study_id",
    "session_id",
    "assignment",
    "status",
    "started",
    "completed",
    "tasks_done",
    "tasks_total",
    "gold_accuracy",
    "attention_checks_passed",
    "median_seconds_per_task",
    "too_fast",
    "suggestion",
    "reasons",
    "review",
    "completion_code",
]


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


def write_payment_csv(batch: Batch, out) -> None:
    """One row per assignment; the completion code only for complete ones (to match what workers submit).
    Worker ids may start with + - or @, which spreadsheets would run as formulas: cells are escaped."""
    writer = FormulaSafeCsvWriter(out)
    writer.writerow(PAYMENT_COLUMNS)
    for q in batch_quality(batch):
        a = q.assignment
        writer.writerow(
            [
                a.worker_id,
                a.study_id,
                a.session_id,
                a.pk,
                q.status,
                _iso(a.started_at),
                _iso(a.completed_at),
                q.done,
                q.total,
                "" if q.gold_accuracy is None else f"{q.gold_accuracy:.3f}",
                f"{q.n_attention_passed}/{q.n_attention}" if q.n_attention else "",
                "" if q.median_seconds is None else f"{q.median_seconds:.2f}",
                "yes" if q.too_fast else "no",
                q.suggestion,
                "; ".join(q.reasons),
                a.review,
                completion_code(a) if q.is_complete else "",
            ]
        )
