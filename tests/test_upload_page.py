"""The upload page: owners and scientists, multiple files, same ingestion service, progress via the Job row."""

import io
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core.models import Project, ProjectMembership, Subject, SubjectSet, Workflow
from jobs.models import Job


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def users(db):
    make = get_user_model().objects.create_user
    return {name: make(name, password=f"pw-{name}-123") for name in ("owner", "collab", "viewer", "stranger")}


@pytest.fixture
def project(users):
    project = Project.objects.create(slug="ztf", name="ZTF", owner=users["owner"])
    ProjectMembership.objects.create(project=project, user=users["collab"], role="scientist")
    ProjectMembership.objects.create(project=project, user=users["viewer"], role="viewer")
    return project


@pytest.fixture
def workflow(project):
    return Workflow.objects.create(project=project, slug="rb", name="Real or bogus")


def npy_upload(name="stack.npy", n=2) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).normal(size=(n, 63, 63, 3)).astype(np.float32))
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/octet-stream")


@pytest.mark.parametrize("who, status", [(None, 302), ("viewer", 403), ("stranger", 404)])
def test_only_owners_and_scientists_upload(client, users, project, workflow, who, status):
    """As the uploads API (WRITE_ROLES): a viewer is refused (403), someone without a role learns nothing
    (404), and an anonymous visitor is sent to log in (302)."""
    if who:
        client.force_login(users[who])
    url = reverse("core:upload", args=[project.slug])
    assert client.get(url).status_code == status
    response = client.post(url, {"workflow": workflow.pk, "files": [npy_upload()]})
    assert response.status_code == status
    assert Subject.objects.count() == 0 and Job.objects.count() == 0


def test_a_scientist_uploads(client, users, project, workflow):
    client.force_login(users["collab"])
    page = client.get(reverse("core:upload", args=[project.slug]))
    assert page.status_code == 200 and b'name="files" multiple' in page.content
    assert b"Upload data" in client.get(reverse("labeling:project_dashboard", args=[project.slug])).content
    response = client.post(
        reverse("core:upload", args=[project.slug]), {"workflow": workflow.pk, "files": [npy_upload()]}
    )
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("core:upload_progress", args=[project.slug, job.pk])
    assert job.kind == Job.INGEST and job.project == project
    assert client.get(response["Location"]).status_code == 200


def test_owner_uploads_several_files_and_sees_the_result(
    client, users, project, workflow, media, settings, django_capture_on_commit_callbacks
):
    client.force_login(users["owner"])
    page = client.get(reverse("core:upload", args=[project.slug]))
    assert page.status_code == 200 and b'name="files" multiple' in page.content
    assert b"Upload data" in client.get(reverse("labeling:project_dashboard", args=[project.slug])).content

    bad = SimpleUploadedFile("broken.fits", b"not a fits file at all")
    # The request only stores the files and queues the job; the job runs once the request's
    # transaction commits (at once here: Celery is eager in tests).
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("core:upload", args=[project.slug]),
            {"workflow": workflow.pk, "subject_set": "night 1", "files": [npy_upload(), bad]},
        )
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("core:upload_progress", args=[project.slug, job.pk])
    assert job.kind == Job.INGEST and job.status == Job.SUCCEEDED and job.progress == 1.0
    assert job.message == "ingested 2, duplicates 0, failed 1"
    assert job.log.startswith("broken.fits: not a FITS file")
    assert set(Subject.objects.values_list("external_id", flat=True)) == {"stack.npy:0", "stack.npy:1"}
    assert SubjectSet.objects.get(name="night 1").subjects.count() == 2
    # The uploads themselves are not kept once ingested, and were never in public media.
    assert not list(Path(settings.PRIVATE_ROOT).rglob("*.npy"))
    assert not list(Path(media).rglob("stack.npy"))

    page = client.get(response["Location"])
    assert b"ingested 2, duplicates 0, failed 1" in page.content
    assert b"broken.fits: not a FITS file" in page.content
    partial = client.get(response["Location"], headers={"HX-Request": "true"})
    assert partial.status_code == 200 and b"<html" not in partial.content
    assert b'data-status="succeeded"' in partial.content
    assert b"hx-trigger" not in partial.content  # finished: polling stops


def test_open_job_partial_keeps_polling(client, users, project, workflow):
    job = Job.objects.create(
        project=project, workflow=workflow, kind=Job.INGEST, status=Job.RUNNING, progress=0.25
    )
    client.force_login(users["owner"])
    partial = client.get(
        reverse("core:upload_progress", args=[project.slug, job.pk]), headers={"HX-Request": "true"}
    )
    assert b'hx-trigger="every 1s"' in partial.content and b'value="25"' in partial.content


def test_upload_without_files_or_workflow_is_refused(client, users, project, workflow):
    client.force_login(users["owner"])
    url = reverse("core:upload", args=[project.slug])
    response = client.post(url, {"workflow": workflow.pk})
    assert response.status_code == 400 and b"Choose at least one file." in response.content
    response = client.post(url, {"workflow": 999999, "files": [npy_upload()]})
    assert response.status_code == 400 and b"Choose a workflow." in response.content
    assert Job.objects.count() == 0 and Subject.objects.count() == 0


def test_oversized_upload_is_refused(client, users, project, workflow, settings):
    settings.SKYVOTE_MAX_UPLOAD_BYTES = 1000
    client.force_login(users["owner"])
    response = client.post(
        reverse("core:upload", args=[project.slug]), {"workflow": workflow.pk, "files": [npy_upload()]}
    )
    assert response.status_code == 400 and b"over the 1000-byte limit" in response.content
    assert Job.objects.count() == 0


def test_another_projects_job_is_not_found(client, users, project, workflow):
    other = Project.objects.create(slug="other", name="Other", owner=users["stranger"])
    job = Job.objects.create(project=other, kind=Job.INGEST)
    client.force_login(users["owner"])
    assert client.get(reverse("core:upload_progress", args=[project.slug, job.pk])).status_code == 404
