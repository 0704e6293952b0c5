"""An upload whose process died: the sweep finishes the ingest job or fails it, and nothing is left behind.

A worker SIGKILLed in the middle of an ingest job leaves the job running with a heartbeat that stops,
its temporary folder (named by core.ingest's `_workdir_prefix`) and the uploaded files in private
storage. The first tests build exactly that state and run the real sweep (Celery eager: a re-queued
job runs at once); the last one kills a real gunicorn right after it answered an upload and lets a
real short-queue worker process finish the job.
"""

import io
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from core.authentication import create_token
from core.ingest import _workdir_prefix, create_ingest_job, ingest_paths
from core.models import Project, Subject, Workflow
from core.storage import private_storage
from jobs.models import Job
from jobs.services import claim, job_setting, run_job, sweep_jobs
from mlcore.synth import generate_triplets
from tests.jobs_support import free_port, kill, start_gunicorn, start_workers, wait_for
from tests.test_celery_integration import loop_env, shared_db  # noqa: F401 (fixtures)

ALL_IDS = ["a.npy:0", "a.npy:1", "b.npy:0", "b.npy:1"]


def _npy(n: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, generate_triplets(n, seed=seed).images.astype(np.float32))
    return buffer.getvalue()


UPLOADS = {"a.npy": _npy(2, seed=1), "b.npy": _npy(2, seed=2)}


@pytest.fixture
def temp_dir(monkeypatch, tmp_path):
    """This test's own temporary folder: ingest work folders are named by job id, and every test
    database (and every other run on this machine) starts its job ids at 1."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _stored_uploads() -> list[Path]:
    return sorted(p for p in Path(settings.PRIVATE_ROOT).rglob("*") if p.is_file())


def _media_arrays() -> list[Path]:
    return sorted(Path(settings.MEDIA_ROOT).rglob("*.npy"))


def _upload(project, workflow, owner) -> Job:
    uploads = [SimpleUploadedFile(name, data) for name, data in UPLOADS.items()]
    # The test's transaction never commits, so the job stays queued: no worker has it yet.
    job = create_ingest_job(project=project, workflow=workflow, uploads=uploads, user=owner)
    assert job.status == Job.QUEUED and len(_stored_uploads()) == 2
    return job


def _die_in_the_middle(job: Job) -> Path:
    """What a worker killed half-way through the job leaves: the job running on attempt 1, its work
    folder with a.npy ingested and b.npy half copied, and a heartbeat that is no longer written."""
    job = claim(job.pk)
    assert job.status == Job.RUNNING and job.attempts == 1
    workdir = Path(tempfile.mkdtemp(prefix=_workdir_prefix(job.pk)))
    with private_storage().open(job.params["files"][0]["storage"], "rb") as source:
        (workdir / "a.npy").write_bytes(source.read())
    ingest_paths([workdir / "a.npy"], project=job.project, workflow=job.workflow, relative_to=workdir)
    (workdir / "b.npy").write_bytes(UPLOADS["b.npy"][:100])
    return workdir


def _heartbeat_goes_stale(job: Job) -> None:
    stale = float(job_setting("heartbeat_stale_s"))
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=stale + 5))


@pytest.mark.django_db
def test_the_sweep_retries_a_dead_ingest_and_each_file_is_ingested_once(project, workflow, owner, temp_dir):
    job = _upload(project, workflow, owner)
    workdir = _die_in_the_middle(job)
    assert sorted(Subject.objects.values_list("external_id", flat=True)) == ["a.npy:0", "a.npy:1"]

    # A heartbeat within heartbeat_stale_s: the job may be alive, the sweep leaves it alone.
    report = sweep_jobs()
    assert job.pk not in report.requeued + report.failed
    assert Job.objects.get(pk=job.pk).status == Job.RUNNING and workdir.exists()

    _heartbeat_goes_stale(job)
    report = sweep_jobs()
    assert report.requeued == [job.pk] and report.dispatched == [job.pk] and report.failed == []

    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED and job.attempts == 2, job.log
    result = job.params["result"]
    # The dead attempt's subjects are found again as duplicates: nothing is stored twice.
    assert (result["ingested"], result["duplicates"], result["failed"]) == (2, 2, 0)
    assert sorted(Subject.objects.values_list("external_id", flat=True)) == ALL_IDS
    assert len(_media_arrays()) == len(ALL_IDS)
    assert not list(temp_dir.glob(_workdir_prefix(job.pk) + "*"))
    assert _stored_uploads() == []

    # A later sweep, or a late duplicate delivery of the message, changes nothing.
    report = sweep_jobs()
    assert job.pk not in report.requeued + report.failed + report.dispatched
    assert run_job(job.pk) is None
    assert Subject.objects.count() == len(ALL_IDS)


@pytest.mark.django_db
def test_with_no_attempts_left_the_sweep_fails_the_job_and_deletes_the_upload(
    project, workflow, owner, temp_dir, settings
):
    settings.SKYVOTE_JOBS = {**settings.SKYVOTE_JOBS, "max_attempts": 1}
    job = _upload(project, workflow, owner)
    _die_in_the_middle(job)
    _heartbeat_goes_stale(job)

    report = sweep_jobs()
    assert report.failed == [job.pk] and report.requeued == []
    job.refresh_from_db()
    assert job.status == Job.FAILED and job.finished_at is not None
    assert "stopped responding" in job.error and "no attempts left" in job.log
    assert not list(temp_dir.glob(_workdir_prefix(job.pk) + "*"))
    assert _stored_uploads() == []
    # What the dead attempt had committed stays whole (each file is ingested atomically).
    assert sorted(Subject.objects.values_list("external_id", flat=True)) == ["a.npy:0", "a.npy:1"]
    assert len(_media_arrays()) == 2
    assert run_job(job.pk) is None  # a late delivery does not bring it back


@pytest.mark.slow
@pytest.mark.celery_integration
@pytest.mark.django_db(transaction=True)
def test_an_upload_outlives_its_killed_web_process(loop_env, django_user_model):  # noqa: F811
    """gunicorn answers the upload (202), is SIGKILLed at once, and a short-queue worker started only
    then finds the job and ingests it: the upload needs nothing more from the web process."""
    owner = django_user_model.objects.create_user("owner", password="pw-123456789")
    project = Project.objects.create(slug="ztf", name="ZTF", owner=owner)
    workflow = Workflow.objects.create(project=project, slug="rb", name="Real or bogus?")
    _, key = create_token(owner, "uploader")
    port = free_port()
    web = start_gunicorn(loop_env, port)

    response = requests.post(
        f"http://127.0.0.1:{port}/api/projects/{project.slug}/uploads/",
        headers={"Authorization": f"Token {key}"},
        data={"workflow": workflow.pk},
        files=[("files", (name, data, "application/octet-stream")) for name, data in UPLOADS.items()],
        timeout=60,
    )
    kill(web)
    assert response.status_code == 202, response.text
    job = Job.objects.get(pk=response.json()["id"])
    # Stored and sent to the broker before the answer: nothing was left for the web process to do.
    assert job.status == Job.QUEUED and job.dispatched_at is not None, job.message
    assert len(_stored_uploads()) == 2

    start_workers(loop_env, {"short": {}})

    def finished():
        found = Job.objects.get(pk=job.pk)
        return found if found.status in (Job.SUCCEEDED, Job.FAILED) else None

    job = wait_for(finished, 120, loop_env, "the short worker to run the ingest job")
    assert job.status == Job.SUCCEEDED and job.attempts == 1, job.error
    assert job.params["result"]["ingested"] == len(ALL_IDS)
    assert sorted(Subject.objects.filter(project=project).values_list("external_id", flat=True)) == ALL_IDS
    # The worker deletes the uploaded files just after it records success: wait for it.
    wait_for(lambda: not _stored_uploads(), 30, loop_env, "the worker to delete the uploaded files")


def test_the_sweep_removes_uploads_whose_web_process_died_before_queueing_a_job(db, settings):
    """Killed while saving the files: no job names the folder, so the sweep removes it once it is old
    (an hour: a slow upload in progress is never touched); a folder an open job still needs stays."""
    import os
    import time

    from core.ingest import ORPHAN_UPLOAD_AGE_S, remove_orphan_uploads
    from jobs.services import SweepReport

    root = Path(settings.PRIVATE_ROOT) / "uploads" / "1"
    orphan, fresh, needed = root / "orphan", root / "fresh", root / "needed"
    for folder in (orphan, fresh, needed):
        folder.mkdir(parents=True)
        (folder / "a.npy").write_bytes(b"half an upload")
    old = time.time() - ORPHAN_UPLOAD_AGE_S - 60
    os.utime(orphan, (old, old))
    os.utime(needed, (old, old))
    owner = Project._meta.get_field("owner").related_model.objects.create_user("o", password="pw-12345-xyz")
    project = Project.objects.create(slug="p", name="P", owner=owner)
    Job.objects.create(project=project, kind=Job.INGEST, params={"folder": "uploads/1/needed", "files": []})

    remove_orphan_uploads(SweepReport())
    assert not orphan.exists() and fresh.exists() and needed.exists()
