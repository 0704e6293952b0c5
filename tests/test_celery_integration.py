"""The learning loop on a real `celery worker` process: one complete round, SIGKILL mid-training, broker down.

The worker is a separate process started with `celery -A skyvote worker -Q default,gpu`, on the
embedded filesystem broker in a temporary folder, or on Redis when CELERY_BROKER_URL=redis://...
is set (CI). The test and the worker share a database file (SQLite: the in-memory test database
is swapped for a file for these tests; PostgreSQL: the test database, with transactional_db) and
a media folder. Each test runs a few tiny rounds (160 synthetic subjects, 2 epochs).
"""

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from kombu import pools

from core.ingest import add_subject
from core.models import ModelVersion, Participant, Project, Subject, Workflow
from jobs.models import Job
from jobs.services import open_job, run_job, sweep_jobs
from labeling.services import record_vote
from loop import services as loop
from mlcore.synth import generate_triplets
from tests.loop_support import ranking

# transaction=True: what the test writes is committed, so the worker process can read it.
pytestmark = [pytest.mark.celery_integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
ON_REDIS = BROKER_URL.startswith("redis://")
DEAD_REDIS = "redis://127.0.0.1:1/15"  # nothing listens on port 1
STALE_S = 3.0
QUICK_TRAINING = {"SKYVOTE_TRAIN_MAX_EPOCHS": "2", "SKYVOTE_TRAIN_TIME_BUDGET_S": "30"}
# Long enough to be killed in the middle of it; the time budget bounds it anyway.
SLOW_TRAINING = {"SKYVOTE_TRAIN_MAX_EPOCHS": "500", "SKYVOTE_TRAIN_TIME_BUDGET_S": "40"}


# ---------------------------------------------------------------------------------------------
# Shared database, media and broker


def _database_url(settings_dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{settings_dict.get('HOST') or 'localhost'}{port}/{settings_dict['NAME']}"


@pytest.fixture
def shared_db(tmp_path, django_db_blocker):
    """A database the worker process can open: the in-memory SQLite test DB is swapped for a file."""
    original = connections["default"]
    in_memory = original.vendor == "sqlite" and original.is_in_memory_db()
    name = str(original.settings_dict["NAME"])
    is_test_db = (
        in_memory or name == str((original.settings_dict.get("TEST") or {}).get("NAME")) or "test" in name
    )
    if not is_test_db:  # pytest-django did not set up a test database: never hand the real one to a worker
        pytest.fail(f"refusing to share {original.settings_dict['NAME']!r}: not a test database")
    if in_memory:
        settings_dict = copy.deepcopy(original.settings_dict)
        settings_dict["NAME"] = str(tmp_path / "shared.sqlite3")
        wrapper = original.__class__(settings_dict, alias="default")
        connections["default"] = wrapper
        try:
            with django_db_blocker.unblock():
                no_migrations = {config.label: None for config in apps.get_app_configs()}
                with override_settings(MIGRATION_MODULES=no_migrations):
                    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
                yield _database_url(settings_dict)
                wrapper.close()
        finally:
            connections["default"] = original
    else:  # a test database file (SQLITE_TEST_NAME) or PostgreSQL's test database
        yield _database_url(original.settings_dict)


def _point_app_at(app, url: str, options: dict) -> None:
    """Make this process publish to another broker (the worker is started on the same one)."""
    pools.reset()  # close and forget kombu's global connection/producer pools (keyed by broker URL)
    # Settings come from Django's CELERY_* names (namespace CELERY): override those keys.
    app.conf.CELERY_BROKER_URL = url
    app.conf.CELERY_BROKER_TRANSPORT_OPTIONS = options
    app._after_fork()  # drops the cached connection and producer pools
    assert app.conf.broker_write_url == url and app.conf.broker_transport_options == options


@pytest.fixture
def loop_env(shared_db, tmp_path, settings):
    """Folders and settings shared by this process and the worker processes it starts."""
    from django.core.cache import cache

    from skyvote.celery import app

    cache.clear()  # the loop's vote counters are keyed by workflow id, which the fresh database reuses
    var = tmp_path / "var"
    broker = var / "broker"
    for sub in ("out", "processed", "control"):
        (broker / sub).mkdir(parents=True, exist_ok=True)
    media = tmp_path / "media"
    cache_dir = tmp_path / "cache"
    settings.MEDIA_ROOT = media
    settings.PRIVATE_ROOT = tmp_path / "private"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.SKYVOTE_JOBS = {**settings.SKYVOTE_JOBS, "heartbeat_stale_s": STALE_S}
    settings.SKYVOTE_LOOP = {
        **settings.SKYVOTE_LOOP,
        "cache_dir": str(cache_dir / "test-process"),
        "min_train_labels": 10,
        "train_max_epochs": 2,
        "train_time_budget_s": 30.0,
        "mc_samples": 4,
    }
    if ON_REDIS:
        broker_options = dict(app.conf.broker_transport_options or {})
        live_url = BROKER_URL
    else:
        broker_options = {
            "data_folder_in": str(broker / "out"),
            "data_folder_out": str(broker / "out"),
            "processed_folder": str(broker / "processed"),
            "control_folder": str(broker / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
        live_url = "filesystem://"
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    _point_app_at(app, live_url, broker_options)
    if ON_REDIS:
        with app.connection_for_write() as conn:
            for queue in ("short", "gpu"):
                conn.default_channel.queue_purge(queue)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skyvote.settings",
        "DATABASE_URL": shared_db,
        "SKYVOTE_VAR_DIR": str(var),
        "MEDIA_ROOT": str(media),
        "SKYVOTE_PRIVATE_ROOT": str(tmp_path / "private"),
        "SKYVOTE_CACHE_DIR": str(cache_dir / "worker"),
        "SKYVOTE_MIN_TRAIN_LABELS": "10",
        "SKYVOTE_MC_SAMPLES": "4",
        "SKYVOTE_MIN_HELDOUT": "4",
        "SKYVOTE_HEARTBEAT_STALE_S": str(STALE_S),
        "CELERY_TASK_ALWAYS_EAGER": "",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    if ON_REDIS:
        env["CELERY_BROKER_URL"] = BROKER_URL
    else:
        env.pop("CELERY_BROKER_URL", None)
    state = {"app": app, "env": env, "tmp": tmp_path, "live": (live_url, broker_options), "workers": []}
    yield state
    for worker in state["workers"]:
        _kill(worker)
    _point_app_at(app, saved[0], saved[1])


def _start_worker(loop_env, training: dict, name: str) -> subprocess.Popen:
    log_path = loop_env["tmp"] / f"worker-{name}.log"
    command = [
        # The pool comes from the settings: solo on the filesystem transport, prefork on Redis.
        sys.executable, "-m", "celery", "-A", "skyvote", "worker", "-Q", "short,gpu", "-c", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            command, cwd=REPO, env={**loop_env["env"], **training}, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker.log_path = log_path
    loop_env["workers"].append(worker)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if " ready." in text:
            return worker
        if worker.poll() is not None:
            pytest.fail(f"the celery worker exited with {worker.returncode}:\n{text[-3000:]}")
        time.sleep(0.3)
    pytest.fail(
        f"the celery worker did not start within 90 s:\n{log_path.read_text(errors='replace')[-3000:]}"
    )


def _kill(worker: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool processes (its own process group)."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def _worker_log(loop_env) -> str:
    return "\n".join(w.log_path.read_text(errors="replace")[-2500:] for w in loop_env["workers"])


def _wait_for(predicate, timeout: float, loop_env, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}\n--- worker log ---\n{_worker_log(loop_env)}"
    )


def _finished(job_id):
    def check():
        job = Job.objects.get(pk=job_id)
        return job if job.status in (Job.SUCCEEDED, Job.FAILED) else None

    return check


# ---------------------------------------------------------------------------------------------
# A workflow with 160 synthetic subjects


N_SUBJECTS, N_GOLD, TRAIN_EVERY = 160, 30, 60


@pytest.fixture
def synthetic_workflow(loop_env, django_user_model):
    owner = django_user_model.objects.create_user("owner", password="pw-123456789")
    project = Project.objects.create(slug="ztf", name="ZTF", owner=owner)
    workflow = Workflow.objects.create(
        project=project, slug="rb", name="Real or bogus?", retirement_limit=1, train_every=TRAIN_EVERY,
        exploration_share=0.0, gold_schedule=[[None, 0.0]],
    )  # fmt: skip
    batch = generate_triplets(N_SUBJECTS, seed=5)
    subjects = []
    for i in range(N_SUBJECTS):
        subject, _ = add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=f"s{i}", array=batch.images[i],
            metadata={}, source="synthetic", truth_label="real" if batch.labels[i] else "bogus", render=False,
        )  # fmt: skip
        subjects.append(subject)
    # The held-out set: gold from the truth (the experts).
    for subject in subjects[:N_GOLD]:
        Subject.objects.filter(pk=subject.pk).update(gold_label=subject.truth_label)
    return workflow, subjects[N_GOLD:]


def _volunteer_votes(workflow, subjects, n: int, start: int = 0) -> int:
    """n truthful votes from fresh volunteers (retirement_limit 1: each is a new decided label)."""
    voter = Participant.objects.create(kind=Participant.ANONYMOUS, session_key=uuid.uuid4().hex)
    count = 0
    for subject in subjects[start : start + n]:
        result = record_vote(
            workflow=workflow, subject_id=subject.pk, participant=voter, answer=subject.truth_label,
            idempotency_key=uuid.uuid4(), trusted=True,
        )  # fmt: skip
        assert result.created
        count += 1
    return count


def _open_round(workflow):
    return open_job(workflow, Job.TRAIN)


# ---------------------------------------------------------------------------------------------


def test_votes_trigger_a_complete_round_on_a_real_worker(loop_env, synthetic_workflow):
    workflow, pool = synthetic_workflow
    _start_worker(loop_env, QUICK_TRAINING, "round")
    before = ranking(workflow)

    # 59 volunteer labels (the 40 gold subjects are the held-out set and do not count): one short of K.
    _volunteer_votes(workflow, pool, TRAIN_EVERY - 1)
    assert _open_round(workflow) is None
    _volunteer_votes(workflow, pool, 1, start=TRAIN_EVERY - 1)  # the K-th label
    job = _open_round(workflow)
    assert job is not None and job.params["reason"] == "labels"

    job = _wait_for(_finished(job.pk), 240, loop_env, "the training round")
    assert job.status == Job.SUCCEEDED, f"{job.error}\n{_worker_log(loop_env)}"
    assert job.dispatched_at is not None and job.attempts == 1
    workflow.refresh_from_db()
    version = workflow.active_model
    assert version is not None and version == job.model_version and version.status == ModelVersion.ACTIVE
    assert version.n_train == TRAIN_EVERY and version.artifact_sha256
    assert version.metrics["heldout"]["n"] == N_GOLD
    after = ranking(workflow)
    assert after != before and set(after) == set(before) - {s.pk for s in pool[:TRAIN_EVERY]}
    assert Subject.objects.filter(pk__in=after, model_score__isnull=True).count() == 0


def test_sigkill_mid_training_keeps_the_previous_model_and_the_loop_recovers(loop_env, synthetic_workflow):
    workflow, pool = synthetic_workflow
    n_first = TRAIN_EVERY
    _volunteer_votes(workflow, pool, n_first)  # queues round 1 (no worker yet: it waits in the broker)
    first_job = _open_round(workflow)
    # Round 1 runs here, in the test process; the worker later finds it done and does nothing.
    run_job(first_job.pk)
    workflow.refresh_from_db()
    first = workflow.active_model
    assert first is not None, Job.objects.get(pk=first_job.pk).error

    worker = _start_worker(loop_env, SLOW_TRAINING, "slow")
    # No early stopping: the round is still training when it is killed.
    job, created = loop.request_training(workflow, reason="owner", train_config={"patience": 100_000})
    assert created

    def training():
        j = Job.objects.get(pk=job.pk)
        return j if j.status == Job.RUNNING and 0.12 <= j.progress < 0.6 and "epoch" in j.message else None

    _wait_for(training, 180, loop_env, "the round to be in the middle of training")
    _kill(worker)  # kill -9 the worker and its pool process, mid-epoch

    job.refresh_from_db()
    assert job.status == Job.RUNNING  # nobody told the database: the heartbeat just stops
    workflow.refresh_from_db()
    assert workflow.active_model == first
    assert (
        not ModelVersion.objects.filter(workflow=workflow)
        .exclude(pk=first.pk)
        .filter(status="active")
        .exists()
    )

    # Votes keep flowing while no worker is alive.
    assert _volunteer_votes(workflow, pool, 5, start=n_first) == 5

    # The sweep finds the stale heartbeat and re-queues the round; a new worker finishes it.
    time.sleep(STALE_S + 0.5)
    report = sweep_jobs()
    assert job.pk in report.requeued and job.pk in report.dispatched
    _start_worker(loop_env, QUICK_TRAINING, "after-kill")
    job = _wait_for(_finished(job.pk), 240, loop_env, "the retried round")
    assert job.status == Job.SUCCEEDED and job.attempts == 2, job.error
    assert "worker lost" in job.log

    # The next trigger works.
    nxt, created = loop.request_training(workflow, reason="owner")
    assert created
    nxt = _wait_for(_finished(nxt.pk), 240, loop_env, "the next round")
    assert nxt.status == Job.SUCCEEDED, nxt.error
    assert (
        nxt.model_version.version == 3
    )  # v1, the retried round's v2, this one: nothing from the killed attempt


def test_broker_down_votes_are_accepted_and_the_round_is_sent_when_it_is_back(
    loop_env, synthetic_workflow, monkeypatch
):
    workflow, pool = synthetic_workflow
    app = loop_env["app"]
    live_url, live_options = loop_env["live"]
    if ON_REDIS:
        monkeypatch.setenv("CELERY_BROKER_URL", DEAD_REDIS)  # Celery reads this variable before its settings
        _point_app_at(app, DEAD_REDIS, live_options)
    else:  # a broker folder that does not exist: every publish fails
        _point_app_at(
            app, "filesystem://", {**live_options, "data_folder_out": str(loop_env["tmp"] / "gone")}
        )

    started = time.monotonic()
    assert _volunteer_votes(workflow, pool, TRAIN_EVERY) == TRAIN_EVERY
    assert time.monotonic() - started < 60  # votes are not held up by the dead broker
    job = _open_round(workflow)
    assert job is not None and job.status == Job.QUEUED and job.dispatched_at is None
    assert "Waiting for the task broker" in job.message
    assert sweep_jobs().undispatched == [job.pk]  # still down: kept, not lost

    if ON_REDIS:
        monkeypatch.setenv("CELERY_BROKER_URL", live_url)
    _point_app_at(app, live_url, live_options)  # the broker is back
    report = sweep_jobs()
    assert report.dispatched == [job.pk]
    _start_worker(loop_env, QUICK_TRAINING, "after-outage")
    job = _wait_for(_finished(job.pk), 240, loop_env, "the round sent by the sweep")
    assert job.status == Job.SUCCEEDED, job.error
    workflow.refresh_from_db()
    assert workflow.active_model == job.model_version
