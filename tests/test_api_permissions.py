"""Per-project roles on every API endpoint and export page: another project's owner gets 404
everywhere (the project's existence does not leak), viewers read and export but cannot upload,
panel worker ids reach owners only (not scientists or viewers)."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, reverse

from core.authentication import create_token
from core.exporters import start_export
from core.models import ModelVersion, Project, ProjectMembership, SubjectSet, Workflow
from core.permissions import MEMBER_ROLES, OWNER
from core.storage import open_stored
from jobs.models import Job
from jobs.services import run_job
from skyvote import api_urls
from tests.exports_support import populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, workflow, django_user_model):
    return populate(project, workflow, django_user_model, n_subjects=4)


def _user_with_role(django_user_model, project, name, role):
    user = django_user_model.objects.create_user(name, password="pw-123456789")
    if role:
        ProjectMembership.objects.create(project=project, user=user, role=role)
    return user


def _auth(user, scope="write"):
    _token, key = create_token(user, "test", scope=scope)
    return {"Authorization": f"Bearer {key}"}


def _set_public(project, is_public):
    project.is_public = is_public
    project.save(update_fields=["is_public"])


def _next_url(data):
    return reverse("api_workflow_next", args=[data.project.slug, data.workflow.pk])


@pytest.fixture
def outsider(django_user_model, owner):
    """Owner of a different project: no role in ours."""
    user = django_user_model.objects.create_user("rival", password="pw-123456789")
    other = Project.objects.create(slug="rival-project", name="Rival", owner=user)
    Workflow.objects.create(project=other, slug="rb", name="RB")
    return user


@pytest.fixture
def finished_export(data, owner):
    job = start_export(project=data.project, user=owner, role="owner", kind="labels", fmt="csv")
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED
    return job


def _project_urls(data, job) -> list[tuple[str, str]]:
    """(method, url) of every project-scoped API endpoint, with real ids of this project."""
    model = ModelVersion.objects.filter(workflow=data.workflow).first()
    ids = {
        "api_workflow": data.workflow.pk,
        "api_workflow_next": data.workflow.pk,
        "api_workflow_start_from": data.workflow.pk,
        "api_workflow_train": data.workflow.pk,
        "api_subject": data.subjects[0].pk,
        "api_model_version": model.pk,
        "api_model_version_artifact": model.pk,
        "api_export_detail": job.pk,
        "api_export_download": job.pk,
        "api_ingest_job": Job.objects.create(
            project=data.project, workflow=data.workflow, kind=Job.INGEST
        ).pk,
        "api_member": ProjectMembership.objects.create(
            project=data.project,
            user=get_user_model().objects.create_user("member-of-data", password="pw-123456789"),
            role="viewer",
        ).pk,
        "api_subject_set": SubjectSet.objects.create(project=data.project, name="api night").pk,
    }
    urls = []
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if "<slug:project>" not in str(pattern.pattern):
            continue
        args = [data.project.slug] + ([ids[pattern.name]] if "<int:pk>" in str(pattern.pattern) else [])
        url = reverse(pattern.name, args=args)
        methods = {
            "api_uploads": ["POST"],
            "api_exports": ["GET", "POST"],
            "api_workflow_train": ["POST"],
            "api_gem_ratings": ["POST"],
        }.get(pattern.name, ["GET"])
        urls += [(m, url) for m in methods]
    assert len(urls) >= 17
    return urls


def test_another_projects_owner_gets_404_on_every_endpoint(client, data, finished_export, outsider):
    # Private: serving subjects (…/next/) is for volunteers, open to everyone in a public project.
    _set_public(data.project, False)
    headers = _auth(outsider)
    for method, url in _project_urls(data, finished_export):
        if method == "GET":
            response = client.get(url, headers=headers)
        else:
            response = client.post(url, {"export": "labels", "format": "csv"}, headers=headers)
        assert response.status_code == 404, (method, url, response.status_code)
        assert data.project.name.encode() not in response.content
    # The rival's own project list does not show ours.
    listed = client.get(reverse("api_projects"), headers=headers).json()
    assert [p["slug"] for p in listed["results"]] == ["rival-project"]
    # Once the project is public the rival may volunteer in it like anyone, and that is all.
    _set_public(data.project, True)
    served = client.get(_next_url(data), headers=headers)
    assert served.status_code == 200 and served.json()["subject"] is not None


def test_another_projects_owner_gets_404_on_export_pages(client, data, finished_export, outsider):
    client.force_login(outsider)
    slug, pk = data.project.slug, finished_export.pk
    for url in (
        reverse("core:exports", args=[slug]),
        reverse("core:export_progress", args=[slug, pk]),
        reverse("core:export_download", args=[slug, pk]),
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("core:exports", args=[slug]), {"export": "votes:csv"}).status_code == 404
    assert Job.objects.filter(project=data.project, kind=Job.EXPORT).count() == 1


def test_anonymous_requests_are_refused(client, data, finished_export):
    _set_public(data.project, False)
    for method, url in _project_urls(data, finished_export):
        response = client.get(url) if method == "GET" else client.post(url, {})
        # Serving needs no account (anonymous volunteers): a private project's is as if it did not exist.
        expected = (404,) if url == _next_url(data) else (401, 403)
        assert response.status_code in expected, (method, url, response.status_code)
        assert data.project.name.encode() not in response.content
    # A public project serves anonymous volunteers.
    _set_public(data.project, True)
    assert client.get(_next_url(data)).json()["subject"] is not None
    response = client.get(reverse("api_projects"))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Token"


def test_viewer_reads_and_exports_but_cannot_upload(client, data, finished_export, django_user_model):
    """Viewers are for dashboards and exports: they export (without worker ids), never upload."""
    viewer = _user_with_role(django_user_model, data.project, "viewer1", "viewer")
    headers = _auth(viewer)
    slug = data.project.slug
    assert client.get(reverse("api_subjects", args=[slug]), headers=headers).status_code == 200
    assert client.get(reverse("api_votes", args=[slug]), headers=headers).status_code == 200
    for url in (
        reverse("api_exports", args=[slug]),
        reverse("api_export_detail", args=[slug, finished_export.pk]),
        reverse("api_export_download", args=[slug, finished_export.pk]),
    ):
        assert client.get(url, headers=headers).status_code == 200, url
    started = client.post(
        reverse("api_exports", args=[slug]), {"export": "votes", "format": "csv"}, headers=headers
    )
    assert started.status_code == 202
    upload = client.post(reverse("api_uploads", args=[slug]), {"workflow": data.workflow.pk}, headers=headers)
    assert upload.status_code == 403
    ingest = Job.objects.create(project=data.project, workflow=data.workflow, kind=Job.INGEST)
    assert client.get(reverse("api_ingest_job", args=[slug, ingest.pk]), headers=headers).status_code == 403
    client.force_login(viewer)
    assert client.get(reverse("core:exports", args=[slug])).status_code == 200
    assert Job.objects.filter(project=data.project, kind=Job.EXPORT).count() == 2


def test_every_member_of_a_private_project_is_served(client, data, owner, django_user_model):
    """Volunteering in a private project is for its members, whatever their role (experts included,
    who have no other API access), also with a read-only token: serving only reads."""
    _set_public(data.project, False)
    members = [(owner, OWNER)] + [
        (_user_with_role(django_user_model, data.project, f"member-{role}", role), role)
        for role in sorted(MEMBER_ROLES - {OWNER})
    ]
    for user, role in members:
        for scope in ("write", "read"):
            served = client.get(_next_url(data), headers=_auth(user, scope))
            assert served.status_code == 200, (role, scope, served.status_code)
            assert served.json()["ticket"] and "gold_label" not in served.json(), role


def test_expert_only_members_have_no_api_access(client, data, django_user_model):
    expert = _user_with_role(django_user_model, data.project, "expert1", "expert")
    response = client.get(reverse("api_subjects", args=[data.project.slug]), headers=_auth(expert))
    assert response.status_code == 404


def test_worker_ids_reach_owners_only(client, data, owner, django_user_model):
    collaborator = _user_with_role(django_user_model, data.project, "collab1", "scientist")
    url = reverse("api_votes", args=[data.project.slug]) + f"?page_size=1000&workflow={data.workflow.slug}"
    as_owner = client.get(url, headers=_auth(owner)).json()["results"]
    as_collaborator = client.get(url, headers=_auth(collaborator)).json()["results"]
    worker_id = data.worker.external_id
    assert {v["worker_id"] for v in as_owner if v["participant_kind"] == "worker"} == {worker_id}
    assert {v["worker_id"] for v in as_collaborator} == {None}
    skills = client.get(reverse("api_skills", args=[data.project.slug]), headers=_auth(collaborator))
    assert worker_id not in skills.content.decode()

    # Exports started by a scientist or a viewer leave worker ids out; an owner's include them.
    viewer = _user_with_role(django_user_model, data.project, "viewer2", "viewer")
    for user, role in ((collaborator, "scientist"), (viewer, "viewer"), (owner, "owner")):
        job = start_export(project=data.project, user=user, role=role, kind="votes", fmt="csv")
        run_job(job.pk)
        job.refresh_from_db()
        content = b"".join(open_stored(job.result.name))
        assert (worker_id.encode() in content) is (role == "owner")
