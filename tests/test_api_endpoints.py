"""The read endpoints (projects, workflows, subject sets, subjects, votes, similarity votes,
skills, model versions), their filters, ordering and pagination, and the ingestion upload (an
ingest job whose report is read at its URL)."""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from core.authentication import create_token
from core.models import ModelVersion, Subject, SubjectSet, Workflow
from jobs.models import Job
from labeling.labels import training_labels
from labeling.models import ParticipantSkill, Vote
from tests.exports_support import populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, workflow, django_user_model):
    return populate(project, workflow, django_user_model, n_subjects=6)


@pytest.fixture
def api(client, owner):
    _token, key = create_token(owner, "tests")
    headers = {"Authorization": f"Bearer {key}"}

    def get(name, *args, query: str = "", status: int = 200):
        response = client.get(reverse(name, args=args) + query, headers=headers)
        assert response.status_code == status, response.content
        return (
            response.json()
            if response.headers.get("Content-Type", "").startswith("application/json")
            else response
        )

    get.client, get.headers = client, headers
    return get


def test_project_and_workflows(api, data):
    (project,) = api("api_projects")["results"]
    assert project["slug"] == data.project.slug and project["role"] == "owner"
    assert api("api_project", data.project.slug)["name"] == data.project.name
    workflows = api("api_workflows", data.project.slug)["results"]
    assert [w["slug"] for w in workflows] == [data.workflow.slug]
    assert workflows[0]["active_model_version"] == 3
    assert api("api_workflow", data.project.slug, data.workflow.pk)["retirement_limit"] == 3


def test_subject_sets_with_sizes(api, data):
    subject_set = SubjectSet.objects.create(project=data.project, name="night 1")
    subject_set.workflows.add(data.workflow)
    Subject.objects.filter(pk__in=[s.pk for s in data.subjects[:2]]).update(subject_set=subject_set)
    rows = api("api_subject_sets", data.project.slug, query=f"?workflow={data.workflow.slug}")["results"]
    # The other subjects are in the workflow's "default" set, where every ingest without a set goes.
    (row,) = [r for r in rows if r["name"] == "night 1"]
    assert row["n_subjects"] == 2 and row["workflows"] == [data.workflow.pk]
    assert {r["name"] for r in rows} == {"night 1", "default"}


def test_subjects_carry_label_posterior_votes_retirement_and_model_score(api, data):
    body = api("api_subjects", data.project.slug, query="?page_size=100")
    assert body["count"] == len(data.subjects)
    decided = {t.subject_id: t for t in training_labels(data.workflow)}
    for row in body["results"]:
        subject = Subject.objects.get(pk=row["id"])
        assert row["p_real"] == subject.p_real and row["vote_count"] == subject.vote_count
        assert row["status"] == subject.status and row["retired_reason"] == subject.retired_reason
        assert row["model_score"] == subject.model_score
        assert row["model_version"] == (3 if subject.model_score is not None else None)
        t = decided.get(subject.pk)
        assert row["label"] == ("" if t is None else ("real" if t.p_real >= 0.5 else "bogus"))
        assert row["n_real"] + row["n_bogus"] == subject.vote_count
    gold = api("api_subject", data.project.slug, data.subjects[0].pk)
    assert gold["label"] == "real" and gold["label_source"] == "gold" and gold["gold_label"] == "real"


def test_subject_filters_and_ordering(api, data):
    slug = data.project.slug
    retired = api("api_subjects", slug, query="?status=retired")["results"]
    assert retired and {r["status"] for r in retired} == {"retired"}
    assert len(retired) == Subject.objects.filter(project=data.project, status="retired").count()
    gold = api("api_subjects", slug, query="?gold=true")["results"]
    assert [r["id"] for r in gold] == [data.subjects[0].pk]
    ordered = api("api_subjects", slug, query="?ordering=-model_score")["results"]
    scores = [r["model_score"] for r in ordered]
    assert scores == sorted(scores, reverse=True)
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert api("api_subjects", slug, query=f"?created_after={tomorrow}")["count"] == 0
    assert api("api_subjects", slug, query=f"?created_before={tomorrow}")["count"] == len(data.subjects)
    assert api("api_subjects", slug, query=f"?external_id={data.subjects[2].external_id}")["count"] == 1
    bad = api("api_subjects", slug, query="?created_after=last-tuesday", status=400)
    assert "ISO date" in bad["created_after"][0]  # DRF validation errors: a list of messages per field
    assert "active" in api("api_subjects", slug, query="?status=done", status=400)["status"][0]
    assert "No workflow" in api("api_subjects", slug, query="?workflow=nope", status=400)["workflow"][0]


def test_votes_pagination_filters_and_pseudonyms(api, data):
    slug = data.project.slug
    total = Vote.objects.filter(workflow=data.workflow).count()
    first = api("api_votes", slug, query="?page_size=7")
    assert first["count"] == total and len(first["results"]) == 7 and first["next"]
    second = api.client.get(first["next"], headers=api.headers).json()
    assert {v["id"] for v in first["results"]}.isdisjoint(v["id"] for v in second["results"])
    vote = Vote.objects.select_related("subject").order_by("pk").first()
    row = first["results"][0]
    assert row["id"] == vote.pk and row["participant"] == data.project.pseudonym(vote.participant_id)
    assert row["subject_external_id"] == vote.subject.external_id and row["user_agent"] == vote.user_agent
    assert "email" not in row and "user" not in row
    bogus = api("api_votes", slug, query="?answer=bogus&page_size=1000")["results"]
    assert len(bogus) == Vote.objects.filter(answer="bogus").count() and {v["answer"] for v in bogus} == {
        "bogus"
    }
    late = api("api_votes", slug, query="?late=true&page_size=1000")["results"]
    assert len(late) == Vote.objects.filter(subject_was_retired=True).count()
    one = api("api_votes", slug, query=f"?subject={data.subjects[1].pk}")["results"]
    assert {v["subject"] for v in one} == {data.subjects[1].pk}
    newest = api("api_votes", slug, query="?ordering=-id&page_size=1")["results"][0]
    assert newest["id"] == Vote.objects.order_by("-pk").first().pk
    assert api("api_votes", slug, query="?page_size=5000")["results"].__len__() == total  # capped at 1000


def test_skills_are_pseudonymous(api, data):
    rows = api("api_skills", data.project.slug)["results"]
    assert len(rows) == ParticipantSkill.objects.filter(workflow=data.workflow).count() > 0
    pseudonyms = {data.project.pseudonym(p.pk) for p in data.participants}
    assert {r["participant"] for r in rows} <= pseudonyms
    assert all(0.0 <= r["p_l"] <= 1.0 for r in rows)


def test_model_versions_and_artifact_download(api, data):
    model = ModelVersion.objects.get(workflow=data.workflow)
    payload = b"not really a checkpoint, but bytes all the same"
    model.artifact.save("model-v3.pt", ContentFile(payload), save=True)
    rows = api("api_model_versions", data.project.slug, query="?status=active")["results"]
    assert [r["version"] for r in rows] == [3] and rows[0]["metrics"] == {"auc": 0.91}
    response = api.client.get(rows[0]["artifact_url"], headers=api.headers)
    assert response.status_code == 200 and b"".join(response.streaming_content) == payload
    assert "attachment" in response.headers["Content-Disposition"]
    empty = ModelVersion.objects.create(workflow=data.workflow, version=4)
    api("api_model_version_artifact", data.project.slug, empty.pk, status=404)
    assert api("api_model_version", data.project.slug, empty.pk)["artifact_url"] is None


def test_similarity_votes(api, data, project, owner):
    from similarity.models import SimilarityTask, SimilarityVote

    sim = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    subjects = data.subjects
    task = SimilarityTask.objects.create(
        workflow=sim, comparison=subjects[0], candidates=[s.pk for s in subjects[1:5]]
    )
    vote = SimilarityVote.objects.create(
        workflow=sim, task=task, participant=data.participants[0], chosen=[subjects[2].pk], n_chosen=1
    )
    rows = api("api_similarity_votes", project.slug, query="?workflow=sim")["results"]
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == vote.pk and row["chosen"] == [subjects[2].pk]
    assert row["candidates"] == task.candidates and row["comparison"] == subjects[0].pk
    assert row["participant"] == project.pseudonym(data.participants[0].pk)


def _upload(api, capture, slug, **body):
    """POST an upload; the ingest job it queues runs when the request's transaction commits."""
    with capture(execute=True):
        return api.client.post(reverse("api_uploads", args=[slug]), body, headers=api.headers)


def test_upload_queues_an_ingest_job_that_reports_bad_files(
    api, data, ztf_dir, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    alerts = sorted((ztf_dir / "avro").glob("*.avro"))[:2]
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in alerts]
    files.append(SimpleUploadedFile("broken.avro", b"this is not avro"))
    before = Subject.objects.count()
    slug = data.project.slug
    response = _upload(
        api,
        django_capture_on_commit_callbacks,
        slug,
        workflow=data.workflow.pk,
        subject_set="api upload",
        files=files,
    )
    assert response.status_code == 202, response.content
    queued = response.json()
    # Answered before the job ran: the report is on the job, at its URL.
    assert queued["status"] == "queued" and queued["ingested"] is None
    assert response.headers["Location"] == queued["url"]
    job = api.client.get(queued["url"], headers=api.headers).json()
    assert job == api("api_ingest_job", slug, queued["id"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["ingested"] == 2 and job["duplicates"] == 0 and job["failed"] == 1
    assert job["errors"][0]["file"] == "broken.avro" and job["errors"][0]["error"]
    assert Subject.objects.count() == before + 2
    assert set(
        Subject.objects.filter(pk__in=job["subject_ids"]).values_list("subject_set__name", flat=True)
    ) == {"api upload"}

    # Duplicates are told per subject set: the same set again.
    again = _upload(
        api,
        django_capture_on_commit_callbacks,
        slug,
        workflow=data.workflow.pk,
        subject_set="api upload",
        files=[SimpleUploadedFile(alerts[0].name, alerts[0].read_bytes())],
    )
    assert again.status_code == 202
    report = api("api_ingest_job", slug, again.json()["id"])
    assert report["duplicates"] == 1 and report["ingested"] == 0 and report["subject_ids"] == []


def test_upload_with_nothing_usable_reports_it_on_the_job(api, data, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    slug = data.project.slug
    bad = _upload(
        api,
        django_capture_on_commit_callbacks,
        slug,
        workflow=data.workflow.pk,
        files=[SimpleUploadedFile("x.avro", b"nope")],
    )
    assert bad.status_code == 202, bad.content
    job = api("api_ingest_job", slug, bad.json()["id"])
    assert job["ingested"] == 0 and job["failed"] == 1 and job["errors"][0]["file"] == "x.avro"


def test_upload_requests_that_cannot_become_a_job_are_a_400(api, data, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = reverse("api_uploads", args=[data.project.slug])
    missing = api.client.post(url, {"workflow": data.workflow.pk}, headers=api.headers)
    assert missing.status_code == 400 and "files" in missing.json()
    wrong_wf = api.client.post(
        url, {"workflow": 999999, "files": [SimpleUploadedFile("x.npy", b"x")]}, headers=api.headers
    )
    assert wrong_wf.status_code == 400 and "workflow" in wrong_wf.json()
    settings.SKYVOTE_MAX_UPLOAD_BYTES = 4
    too_big = api.client.post(
        url,
        {"workflow": data.workflow.pk, "files": [SimpleUploadedFile("x.npy", b"0123456789")]},
        headers=api.headers,
    )
    assert too_big.status_code == 400 and "limit" in too_big.json()["files"][0]
    assert not Job.objects.filter(kind=Job.INGEST).exists()


def test_ingest_job_url_shows_ingest_jobs_only(api, data):
    export = Job.objects.create(
        project=data.project, kind=Job.EXPORT, params={"kind": "votes", "format": "csv"}
    )
    api("api_ingest_job", data.project.slug, export.pk, status=404)
