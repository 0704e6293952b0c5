"""The upload page: owners only, multiple files, same ingestion service, progress via the Job row."""

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
    ProjectMembership.objects.create(project=project, user=users["collab"], role="collaborator")
    ProjectMembership.objects.create(project=project, user=users["viewer"], role="viewer")
    return project


@pytest.fixture
def workflow(project):
    return Workflow.objects.create(project=project, slug="rb", name="Real or bogus")


def npy_upload(name="stack.npy", n=2) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).normal(size=(n, 63, 63, 3)).astype(np.float32))
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/octet-stream")


@pytest.mark.parametrize("who", [None, "collab", "viewer", "stranger"])
def test_only_owners_see_the_upload_page(client, users, project, workflow, who):
    if who:
        client.force_login(users[who])
    url = reverse("core:upload", args=[project.slug])
    if who is None:
        assert client.get(url).status_code == 302  # to the login page
    else:
        assert client.get(url).status_code == 404
        response = client.post(url, {"workflow": workflow.pk, "files": [npy_upload()]})
        assert response.status_code == 404
    assert Subject.objects.count() == 0 and Job.objects.count() == 0


def test_owner_uploads_several_files_and_sees_the_result(client, users, project, workflow, media):
    client.force_login(users["owner"])
    page = client.get(reverse("core:upload", args=[project.slug]))
    assert page.status_code == 200 and b'name="files" multiple' in page.content
    assert b"Upload data" in client.get(reverse("labeling:project_dashboard", args=[project.slug])).content

    bad = SimpleUploadedFile("broken.fits", b"not a fits file at all")
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
    # The uploads themselves are not kept once ingested.
    assert not list((Path(media) / "jobs").rglob("*.npy"))

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
