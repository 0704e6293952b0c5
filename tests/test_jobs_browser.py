"""In a real Chromium, an owner's votes export finishes while a training round is still running.

Two real Celery worker processes, one per queue as the Procfile runs them (`-Q short`, `-Q gpu`, one
process each), share the database, media and broker with the test (tests/test_celery_integration.py's
`loop_env`); pytest-django's live server serves the pages from the same database. The round is made
long (no early stopping, a large epoch cap and time budget), so the export can only finish in time if
it does not wait behind it. The workers are killed at the end, the round unfinished.
"""

import csv
import io
import uuid
from pathlib import Path

import pytest
from django.urls import reverse

from core.models import Participant, Project, Workflow
from jobs.models import Job
from labeling.services import record_vote
from loop import services as loop
from tests.browser_support import SCREENSHOTS
from tests.jobs_support import kill, live_server_on_shared_db, start_workers, wait_for  # noqa: F401 (fixture)
from tests.loop_support import make_pool
from tests.test_celery_integration import loop_env, shared_db  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery_integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


# Far more than the test needs: the workers are killed long before the round could end by itself.
LONG_TRAINING = {"SKYVOTE_TRAIN_TIME_BUDGET_S": "600", "SKYVOTE_TRAIN_MAX_EPOCHS": "1000000"}
N_VOTES = 12


@pytest.fixture(autouse=True)
def _live_server_before_the_shared_database(live_server):
    """The live server is started (once per session) while the test database is the usual one."""


def test_a_votes_export_finishes_while_a_training_round_runs(
    page,
    live_server_on_shared_db,  # noqa: F811
    loop_env,  # noqa: F811
    django_user_model,
):
    owner = django_user_model.objects.create_user("owner", password="owner-pass-123")
    project = Project.objects.create(slug="ztf", name="ZTF transients", owner=owner)
    # No automatic rounds: the one round of this test is queued below.
    workflow = Workflow.objects.create(project=project, slug="rb", name="Real or bogus?", train_every=0)
    pool = make_pool(project, workflow, n=80, n_labeled=40, n_gold=20, seed=3)
    volunteer = Participant.objects.create(kind=Participant.ANONYMOUS, session_key=uuid.uuid4().hex)
    for pk in pool.unlabeled[:N_VOTES]:  # votes to export, recorded as an import would (no serving ticket)
        record_vote(
            workflow=workflow,
            subject_id=pk,
            participant=volunteer,
            answer="real",
            idempotency_key=uuid.uuid4(),
            source="import",
            trusted=True,
        )

    workers = start_workers(loop_env, {"short": {}, "gpu": LONG_TRAINING})
    # No early stopping: the round trains until its time budget runs out (or the worker is killed).
    train, created = loop.request_training(workflow, reason="owner", train_config={"patience": 1_000_000})
    assert created

    def training():
        job = Job.objects.get(pk=train.pk)
        assert job.status in (Job.QUEUED, Job.RUNNING), f"the round ended early: {job.message}\n{job.error}"
        return job if job.status == Job.RUNNING and "epoch" in job.message else None

    train = wait_for(training, 180, loop_env, "the round to be training on the gpu worker")

    # The owner starts a votes export in the browser.
    base = live_server_on_shared_db.url
    page.goto(f"{base}/accounts/login/?next={reverse('core:exports', args=[project.slug])}")
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "owner-pass-123")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}{reverse('core:exports', args=[project.slug])}")
    page.select_option("#id_export", "votes:csv")
    page.click("text=Start export")
    # htmx puts the new export's card on top and polls it every second until it has finished.
    page.wait_for_selector(".export-job[data-status=succeeded]", timeout=60_000)

    # Finished while the round is still running on the other queue.
    export = Job.objects.get(kind=Job.EXPORT, project=project)
    train.refresh_from_db()
    assert export.status == Job.SUCCEEDED, export.error
    assert train.status == Job.RUNNING and train.finished_at is None, train.message
    assert train.started_at < export.started_at < export.finished_at
    assert "Succeeded" in page.inner_text(f"#export-job-{export.pk} [data-testid=export-status]")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "jobs-export-finished-while-training.png", full_page=True)

    with page.expect_download() as download:
        page.click(f"#export-job-{export.pk} [data-testid=export-download]")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == N_VOTES and {row["answer"] for row in rows} == {"real"}

    # The model page, at the same moment: the round is still training.
    page.goto(f"{base}{reverse('loop:models', args=[project.slug, workflow.slug])}")
    assert page.inner_text("[data-testid=job-status]") == "Running"
    page.screenshot(path=SCREENSHOTS / "jobs-training-round-still-running.png", full_page=True)
    assert Job.objects.get(pk=train.pk).status == Job.RUNNING

    for worker in workers.values():
        kill(worker)
