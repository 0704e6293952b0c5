"""The one job system: every piece of background work is a `Job` row run by one Celery task.

* **Registry.** Each app registers its job kinds (`register("train", queue="gpu", ...)`, in its
  `jobs.py`, imported by `AppConfig.ready`): the function that does the work and the queue that
  fits its length — `short` for seconds (ingest, exports, aggregation, retirement), `gpu` for
  minutes (training, scoring, embedding). Short work never waits behind a training round.
* **Outbox.** `queue_job` creates the row in the caller's transaction; the message is published
  after commit (`dispatch_on_commit`). A broker that is down leaves the job queued, and the sweep
  re-sends it. The broker only ever carries "run job #123".
* **Claim.** `run_job` (the one Celery task, `skyvote.run_job`) moves the job queued → running with
  one conditional UPDATE; a duplicate delivery finds it running or finished and does nothing.
* **Ownership.** Every later write of the attempt goes through `JobRun`, conditional on
  (status = running, attempts = this attempt). A worker presumed dead that was only slow finds zero
  rows updated, gets `JobLost` and stops without touching anything.
* **Sweep.** `sweep_jobs` (beat, every 30 s) re-sends what the broker never took, re-queues or fails
  running jobs whose heartbeat went stale (worker killed, web process killed mid-upload), and calls
  each kind's `on_abandon` so it can clean up (temporary files, half-registered model versions).

This module imports no other Skyvote app: jobs sit below everything else.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from jobs.models import Job

log = logging.getLogger(__name__)

SHORT, GPU = "short", "gpu"
QUEUES = (SHORT, GPU)
RUN_TASK = "skyvote.run_job"
SWEEP_TASK = "skyvote.sweep_jobs"

DEFAULTS = {
    # A running job whose heartbeat is older than this is presumed dead (its worker was killed).
    "heartbeat_stale_s": 120.0,
    # Attempts before a job of a dead worker is failed instead of re-queued.
    "max_attempts": 2,
    # Progress and heartbeat writes are at most this often (seconds).
    "progress_interval_s": 1.0,
}


def job_setting(name: str):
    return settings.SKYVOTE_JOBS.get(name, DEFAULTS[name])


class JobLost(Exception):
    """This attempt no longer owns its job (the sweep presumed it dead and re-queued or failed it)."""


class JobFailed(Exception):
    """A job cannot go on; the message says why, in words for the person who started it."""


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable[[JobRun], str | None]
    queue: str
    label: str
    # Called by the sweep (in its transaction) when an attempt is abandoned: a dead worker's job is
    # re-queued or failed. Cleans up what the attempt left behind.
    on_abandon: Callable[[Job], None] | None = None
    # Called when the job ends failed, whatever the cause (its own error, or the sweep giving up).
    on_failed: Callable[[Job], None] | None = None
    # Exceptions whose message is shown to the user as it is (no traceback in the log).
    plain_errors: tuple[type[BaseException], ...] = ()


_REGISTRY: dict[str, JobKind] = {}


def register(
    name: str,
    *,
    queue: str,
    label: str,
    on_abandon: Callable[[Job], None] | None = None,
    on_failed: Callable[[Job], None] | None = None,
    plain_errors: tuple[type[BaseException], ...] = (),
):
    """Decorator: `fn(run: JobRun) -> str | None` does the work of jobs of kind `name`.

    It reports progress with `run.progress`/`run.log`, raises to fail (JobFailed and `plain_errors`
    with their message, anything else with a traceback in the log) and returns the closing message.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; one of {QUEUES}")

    def decorate(fn):
        _REGISTRY[name] = JobKind(name, fn, queue, label, on_abandon, on_failed, (JobFailed, *plain_errors))
        return fn

    return decorate


def kind_of(name: str) -> JobKind | None:
    return _REGISTRY.get(name)


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------------------------
# Queueing and dispatch (the outbox)


def queue_job(
    kind: str,
    *,
    project,
    workflow=None,
    params: dict | None = None,
    user=None,
    message: str = "Queued",
    coalesce: bool = False,
) -> tuple[Job, bool]:
    """Create a queued job and send it after the surrounding transaction commits → (job, created).

    With `coalesce`, an open (queued or running) job of the same kind in the same workflow is
    returned instead of a new one; a partial unique constraint makes concurrent callers agree.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"no job kind {kind!r} is registered")
    fields = dict(
        project=project,
        workflow=workflow,
        kind=kind,
        params=params or {},
        message=message,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    if coalesce:
        existing = open_job(workflow, kind)
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                job = Job.objects.create(**fields)
        except IntegrityError:  # another request created it between our check and insert
            existing = open_job(workflow, kind)
            if existing is None:
                raise
            return existing, False
    else:
        job = Job.objects.create(**fields)
    dispatch_on_commit(job)
    return job, True


def open_job(workflow, kind: str) -> Job | None:
    if workflow is None:
        return None
    return Job.objects.filter(workflow=workflow, kind=kind, status__in=[Job.QUEUED, Job.RUNNING]).first()


def dispatch_on_commit(job: Job) -> None:
    job_id = job.pk
    transaction.on_commit(lambda: dispatch_job(job_id))


def _eager() -> bool:
    return bool(settings.CELERY_TASK_ALWAYS_EAGER)


def dispatch_job(job_id: int) -> bool:
    """Hand a queued job to the broker, on its kind's queue; True if it took it. Never raises for a
    broker failure (the job stays queued and the sweep re-sends it).

    With CELERY_TASK_ALWAYS_EAGER (tests, debugging) the job runs here, synchronously.
    """
    job = Job.objects.filter(pk=job_id).only("pk", "kind", "status").first()
    if job is None or job.status != Job.QUEUED:
        return False
    kind = kind_of(job.kind)
    if kind is None:
        log.warning("job %s has kind %r, which no app registers", job_id, job.kind)
        return False
    if _eager():
        Job.objects.filter(pk=job_id, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
        run_job(job_id)
        return True
    from skyvote.celery import app

    try:
        # No publish retries: a vote request must not wait for a dead broker. The sweep retries.
        app.send_task(RUN_TASK, args=[job_id], queue=kind.queue, routing_key=kind.queue, retry=False)
    except Exception as exc:  # any broker/transport failure: the job waits in the outbox
        log.warning("broker unavailable, job %s stays in the outbox: %s", job_id, exc)
        Job.objects.filter(pk=job_id, status=Job.QUEUED).update(
            message=f"Waiting for the task broker ({type(exc).__name__}); will be re-sent"[:300]
        )
        return False
    Job.objects.filter(pk=job_id, status=Job.QUEUED).update(
        dispatched_at=timezone.now(), message="Sent to a worker"
    )
    return True


# ---------------------------------------------------------------------------------------------
# Running a job: claim, heartbeat/progress, log, finish


def _stamp() -> str:
    return timezone.now().strftime("%H:%M:%S")


class JobRun:
    """One attempt at a job. Every write is conditional on still owning it (status, attempts)."""

    def __init__(self, job: Job):
        self.job = job
        self.attempt = job.attempts
        self.finished = False
        self._last_write = 0.0
        self._fraction = 0.0

    def _mine(self):
        return Job.objects.filter(pk=self.job.pk, status=Job.RUNNING, attempts=self.attempt)

    def update(self, **fields) -> None:
        """Write fields of the job (with a heartbeat); JobLost if this attempt no longer owns it."""
        if not self._mine().update(heartbeat_at=timezone.now(), **fields):
            raise JobLost(f"job {self.job.pk} attempt {self.attempt} is no longer ours")

    def heartbeat(self, force: bool = False) -> None:
        """Say this attempt is alive; written at most once per progress interval unless forced."""
        now = time.monotonic()
        if force or now - self._last_write >= float(job_setting("progress_interval_s")):
            self._last_write = now
            self.update()

    def progress(self, fraction: float, message: str = "", force: bool = False) -> None:
        self._fraction = max(self._fraction, min(1.0, float(fraction)))
        now = time.monotonic()
        if force or now - self._last_write >= float(job_setting("progress_interval_s")):
            self._last_write = now
            fields = {"progress": round(self._fraction, 4)}
            if message:
                fields["message"] = message[:300]
            self.update(**fields)

    def phase(self, start: float, end: float) -> Callable[[float, str], None]:
        """A progress callback mapping 0..1 of one phase onto start..end of the job."""

        def report(fraction: float, message: str = "") -> None:
            self.progress(start + (end - start) * min(max(float(fraction), 0.0), 1.0), message)

        return report

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job.pk, line)
        self.update(log=Concat(F("log"), Value(f"{_stamp()} {line}\n")), message=line[:300])

    def finish(self, status: str, message: str, error: str = "", **extra) -> None:
        fields = {
            "status": status,
            "finished_at": timezone.now(),
            "message": message[:300],
            "error": error,
            "log": Concat(F("log"), Value(f"{_stamp()} {message}\n")),
            **extra,
        }
        if status == Job.SUCCEEDED:
            fields["progress"] = 1.0
        self.update(**fields)
        self.finished = True

    def fail(self, message: str, error: str = "") -> None:
        self.finish(Job.FAILED, message, error=error or message)


def claim(job_id: int) -> Job | None:
    """Move a queued job to running (one attempt more); None if it is not ours to run.

    A duplicate delivery of a job that is running, or one that finished, changes nothing.
    """
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=Job.QUEUED, kind__in=registered_kinds()).update(
        status=Job.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        progress=0.0,
        message="Started",
        error="",
    )
    if not claimed:
        state = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        log.info("job %s not claimed (status %s): duplicate or finished delivery", job_id, state)
        return None
    return Job.objects.select_related("project", "workflow", "workflow__project").get(pk=job_id)


def run_job(job_id: int) -> Job | None:
    """Claim job `job_id` and run it with its kind's function. Idempotent; never raises for the job's
    own failure (that is recorded on the job). Returns the job as it ended, or None if not claimed."""
    job = claim(job_id)
    if job is None:
        return None
    kind = _REGISTRY[job.kind]
    run = JobRun(job)
    try:
        # Inside a caller's transaction (eager mode, tests) a savepoint keeps a failed step from
        # breaking it; a worker runs in autocommit, where each write stands on its own.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            message = kind.run(run)
        if not run.finished:
            run.finish(Job.SUCCEEDED, message or "Done")
    except JobLost as exc:
        log.warning("%s; stopping without further writes", exc)
        return None
    except Exception as exc:
        if isinstance(exc, kind.plain_errors):
            text, trace = str(exc), ""
        else:
            # An unexpected error: its type and message for the person, the traceback in the log.
            log.exception("job %s (%s) failed", job_id, job.kind)
            text, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        try:
            if trace:
                run.update(log=Concat(F("log"), Value(trace)))
            run.finish(Job.FAILED, f"Failed: {text}"[:300], error=text)
        except JobLost:
            return None
        if kind.on_failed:
            kind.on_failed(job)
    return Job.objects.filter(pk=job_id).first()


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepReport:
    dispatched: list[int] = field(default_factory=list)
    undispatched: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    triggered: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


_SWEEP_HOOKS: list[Callable[[SweepReport], None]] = []


def on_sweep(fn: Callable[[SweepReport], None]):
    """Decorator: run `fn(report)` at the end of every sweep (e.g. catch missed training triggers)."""
    _SWEEP_HOOKS.append(fn)
    return fn


def sweep_jobs(now=None) -> SweepReport:
    """Re-send what the broker never took and recover the jobs of dead workers, of every kind.

    * running jobs whose heartbeat is older than heartbeat_stale_s → re-queued and sent (attempts
      left) or failed (none left); the kind's `on_abandon` cleans up after the dead attempt;
    * queued jobs never dispatched (broker was down), or dispatched long ago but never started
      (the message died with a killed worker) → sent again;
    * then each app's sweep hook (the learning loop checks for missed training triggers).
    """
    now = now or timezone.now()
    stale = timezone.timedelta(seconds=float(job_setting("heartbeat_stale_s")))
    max_attempts = int(job_setting("max_attempts"))
    report = SweepReport()
    known = registered_kinds()

    dead = Job.objects.filter(status=Job.RUNNING, kind__in=known).filter(
        Q(heartbeat_at__lt=now - stale) | Q(heartbeat_at__isnull=True, started_at__lt=now - stale)
    )
    for job in dead:
        kind = _REGISTRY[job.kind]
        last = job.heartbeat_at.isoformat(timespec="seconds") if job.heartbeat_at else "never"
        line = f"{_stamp()} worker lost: no heartbeat since {last} (attempt {job.attempts})"
        mine = Job.objects.filter(pk=job.pk, status=Job.RUNNING, attempts=job.attempts)
        with transaction.atomic():
            if job.attempts < max_attempts:
                updated = mine.update(
                    status=Job.QUEUED,
                    dispatched_at=None,
                    message=f"Worker lost; retrying (attempt {job.attempts + 1} of {max_attempts})",
                    log=Concat(F("log"), Value(line + "; retrying\n")),
                )
                target = report.requeued
            else:
                updated = mine.update(
                    status=Job.FAILED,
                    finished_at=now,
                    message="Failed: the worker was lost",
                    error=f"The worker running this job stopped responding (no heartbeat since {last}) "
                    f"after {job.attempts} attempt(s).",
                    log=Concat(F("log"), Value(line + "; no attempts left\n")),
                )
                target = report.failed
            if updated:
                target.append(job.pk)
                if kind.on_abandon:
                    kind.on_abandon(job)
        if updated and target is report.failed and kind.on_failed:
            kind.on_failed(job)

    # A duplicate message is harmless (claim runs a job once), and dispatch_job re-stamps
    # dispatched_at, so at most one re-send per stale period.
    lost_messages = Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - stale)
    waiting = (
        Job.objects.filter(status=Job.QUEUED, kind__in=known)
        .filter(lost_messages)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    for job_id in list(waiting):
        (report.dispatched if dispatch_job(job_id) else report.undispatched).append(job_id)

    for hook in _SWEEP_HOOKS:
        hook(report)
    return report
