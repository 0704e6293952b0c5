"""Exports through the API and the exports page: a Celery task (eager in tests) writes the file to
Job.result, progress is polled, the download streams (FileResponse) and reads back."""

import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from django.urls import reverse

from core.authentication import create_token
from core.exporters import start_export
from core.models import ProjectMembership, Subject
from jobs.models import Job
from jobs.services import run_job
from loop.exporters import verify_bundle
from tests.exports_support import populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, workflow, django_user_model):
    return populate(project, workflow, django_user_model, n_subjects=5)


@pytest.fixture
def headers(owner):
    _token, key = create_token(owner, "tests")
    return {"Authorization": f"Bearer {key}"}


def _start(client, headers, capture, slug, **body):
    with capture(execute=True):
        response = client.post(
            reverse("api_exports", args=[slug]),
            json.dumps(body),
            content_type="application/json",
            headers=headers,
        )
    return response


def _download(client, headers, job: dict) -> bytes:
    detail = client.get(job["url"], headers=headers).json()
    assert detail["status"] == "succeeded", detail
    assert detail["progress"] == 1.0
    response = client.get(detail["download_url"], headers=headers)
    assert response.status_code == 200
    assert response.streaming  # FileResponse: streamed from storage, never loaded whole
    assert "attachment" in response.headers["Content-Disposition"]
    return b"".join(response.streaming_content)


def test_labels_parquet_and_fits_through_the_api(client, data, headers, django_capture_on_commit_callbacks):
    slug = data.project.slug
    parquet = _start(
        client, headers, django_capture_on_commit_callbacks, slug, export="labels", format="parquet"
    )
    assert parquet.status_code == 202, parquet.content
    table = pq.read_table(io.BytesIO(_download(client, headers, parquet.json())))
    assert table.num_rows == Subject.objects.filter(workflow=data.workflow).count()
    assert sorted(table.column("subject_id").to_pylist()) == sorted(s.pk for s in data.subjects)

    fits_job = _start(
        client, headers, django_capture_on_commit_callbacks, slug, export="labels", format="fits"
    )
    content = _download(client, headers, fits_job.json())
    fits_table = Table.read(io.BytesIO(content), format="fits", hdu="LABELS")
    assert list(fits_table["subject_id"]) == table.column("subject_id").to_pylist()

    job = Job.objects.get(pk=fits_job.json()["id"])
    assert job.kind == Job.EXPORT and job.dispatched_at is not None and job.created_by_id is not None
    listed = client.get(reverse("api_exports", args=[slug]), headers=headers).json()
    assert {j["id"] for j in listed["results"]} == {parquet.json()["id"], fits_job.json()["id"]}


def test_training_bundle_through_the_api_verifies(
    client, data, headers, django_capture_on_commit_callbacks, tmp_path
):
    body = {"export": "bundle", "format": "zip", "workflow": data.workflow.pk}
    job = _start(client, headers, django_capture_on_commit_callbacks, data.project.slug, **body)
    assert job.status_code == 202
    path = tmp_path / "bundle.zip"
    path.write_bytes(_download(client, headers, job.json()))
    manifest = verify_bundle(path)
    assert manifest["workflow"] == data.workflow.slug
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == [
            "croissant.json", "images.npy", "labels.csv", "light_curves.csv", "manifest.json",
        ]  # fmt: skip


def test_bad_export_requests_get_clear_errors_and_create_nothing(client, data, headers):
    url = reverse("api_exports", args=[data.project.slug])
    wrong_format = client.post(url, {"export": "votes", "format": "fits"}, headers=headers)
    assert wrong_format.status_code == 400 and "csv, jsonl, parquet" in wrong_format.json()["detail"]
    unknown = client.post(url, {"export": "everything", "format": "csv"}, headers=headers)
    assert unknown.status_code == 400 and "export" in unknown.json()
    wrong_wf = client.post(url, {"export": "labels", "format": "csv", "workflow": 424242}, headers=headers)
    assert wrong_wf.status_code == 400 and "workflow" in wrong_wf.json()["detail"]
    assert not Job.objects.filter(kind=Job.EXPORT).exists()


def test_download_before_the_export_finished_is_a_409(client, data, headers, owner):
    job = start_export(project=data.project, user=owner, role="owner", kind="votes", fmt="csv")
    response = client.get(reverse("api_export_download", args=[data.project.slug, job.pk]), headers=headers)
    assert response.status_code == 409 and "queued" in response.json()["detail"]


def test_a_failed_export_records_why(data, owner, monkeypatch):
    job = start_export(project=data.project, user=owner, role="owner", kind="bundle", fmt="zip")
    # The workflow's subjects' arrays vanish from storage before the task runs.
    from django.core.files.storage import default_storage

    for subject in data.subjects:
        default_storage.delete(subject.data.name)
    job = run_job(job.pk)
    assert job.status == Job.FAILED and "No such file" in job.error and not job.result
    # Idempotent: running it again leaves the failed job alone.
    assert run_job(job.pk) is None and Job.objects.get(pk=job.pk).attempts == 1  # not run twice


def test_exports_page_starts_polls_and_downloads(client, data, owner, django_capture_on_commit_callbacks):
    client.force_login(owner)
    slug = data.project.slug
    page = client.get(reverse("core:exports", args=[slug]))
    assert page.status_code == 200 and b"Training bundle" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(
            reverse("core:exports", args=[slug]),
            {"export": "votes:jsonl", "workflow": data.workflow.pk},
            headers={"HX-Request": "true"},
        )
    assert started.status_code == 200
    job = Job.objects.get(kind=Job.EXPORT)
    assert f'id="export-job-{job.pk}"' in started.content.decode()
    progress = client.get(
        reverse("core:export_progress", args=[slug, job.pk]), headers={"HX-Request": "true"}
    )
    assert b'data-status="succeeded"' in progress.content and b"every 1s" not in progress.content
    download = client.get(reverse("core:export_download", args=[slug, job.pk]))
    assert download.status_code == 200
    lines = b"".join(download.streaming_content).decode().splitlines()
    assert len(lines) == job.params["result"]["rows"] > 0
    assert json.loads(lines[0])["participant"].startswith("v-")


def test_exports_page_shows_progress_of_a_running_job(client, data, owner):
    client.force_login(owner)
    job = start_export(project=data.project, user=owner, role="owner", kind="labels", fmt="csv")
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, progress=0.42)
    partial = client.get(
        reverse("core:export_progress", args=[data.project.slug, job.pk]), headers={"HX-Request": "true"}
    ).content.decode()
    assert "every 1s" in partial and 'value="42"' in partial
    bad = client.post(reverse("core:exports", args=[data.project.slug]), {"export": "labels:xlsx"})
    assert bad.status_code == 400 and "not &#x27;xlsx&#x27;" in bad.content.decode()


@pytest.mark.parametrize("role", ["scientist", "viewer"])
def test_scientists_and_viewers_export(client, data, django_user_model, role):
    collaborator = django_user_model.objects.create_user("collab", password="pw-123456789")
    ProjectMembership.objects.create(project=data.project, user=collaborator, role=role)
    client.force_login(collaborator)
    assert client.get(reverse("core:exports", args=[data.project.slug])).status_code == 200
    dashboard = client.get(reverse("labeling:project_dashboard", args=[data.project.slug])).content.decode()
    assert reverse("core:exports", args=[data.project.slug]) in dashboard
