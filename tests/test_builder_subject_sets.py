"""Subject sets in the workflow builder: the page (create, rename, attach, detach), the API, ingest into
a chosen set, and the same alert feeding two workflows through two sets."""

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from core import workflows
from core.ingest import add_subject, ingest_paths, subject_set_named
from core.models import ProjectMembership, Subject, SubjectSet, Workflow

pytestmark = pytest.mark.django_db


def triplet(seed=0):
    return np.random.default_rng(seed).normal(size=(3, 63, 63)).astype(np.float32)


@pytest.fixture
def member(django_user_model, project):
    def make(role):
        user = django_user_model.objects.create_user(role, password="pass-12345-word")
        ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


def test_page_creates_renames_attaches_and_detaches(client, owner, project, workflow):
    other, _ = workflows.create_workflow(project, "second")
    client.force_login(owner)
    url = reverse("core:subject_sets", args=[project.slug])
    assert client.get(url).status_code == 200
    resp = client.post(url, {"name": "Night 1", "workflows": [workflow.pk]})
    assert resp.status_code == 302
    night = SubjectSet.objects.get(project=project, name="Night 1")
    assert list(night.workflows.all()) == [workflow]
    # Duplicate and empty names are form errors.
    for name, message in (("Night 1", "already has a subject set"), ("", "This field is required")):
        resp = client.post(url, {"name": name})
        assert resp.status_code == 400 and message in resp.content.decode()

    subject, _ = add_subject(project=project, workflow=workflow, subject_set=night, external_id="a1",
                             array=triplet(), metadata={}, source="npy", render=False)  # fmt: skip
    answered, _ = add_subject(project=project, workflow=workflow, subject_set=night, external_id="a2",
                              array=triplet(1), metadata={}, source="npy", render=False)  # fmt: skip
    Subject.objects.filter(pk=answered.pk).update(vote_count=2)
    edit = reverse("core:subject_set", args=[project.slug, night.pk])
    assert client.get(edit).status_code == 200
    # Rename, attach the second workflow and detach the first in one save.
    resp = client.post(edit, {"name": "Night one", "workflows": [other.pk]})
    assert resp.status_code == 302
    night.refresh_from_db()
    assert night.name == "Night one" and list(night.workflows.all()) == [other]
    subject.refresh_from_db()
    answered.refresh_from_db()
    # Unanswered subjects left the detached workflow and joined the attached one; answered ones stay.
    assert subject.workflow == other and answered.workflow == workflow


def test_page_permissions(client, project, member, django_user_model):
    url = reverse("core:subject_sets", args=[project.slug])
    client.force_login(member("viewer"))
    assert client.get(url).status_code == 200 and "New subject set" not in client.get(url).content.decode()
    assert client.post(url, {"name": "x"}).status_code == 403
    client.force_login(member("scientist"))
    assert client.post(url, {"name": "x"}).status_code == 302
    set_url = reverse("core:subject_set", args=[project.slug, SubjectSet.objects.get(name="x").pk])
    client.force_login(django_user_model.objects.create_user("stranger", password="pass-12345-word"))
    assert client.get(url).status_code == 404 and client.get(set_url).status_code == 404


def test_same_alert_feeds_two_workflows_through_two_sets(project, workflow, ztf_dir):
    other, _ = workflows.create_workflow(project, "second", is_active=True)
    first = ingest_paths(
        [ztf_dir],
        project=project,
        workflow=workflow,
        subject_set=subject_set_named(project, workflow, "ZTF for rb"),
    )
    assert first.ingested > 0 and first.duplicates == 0
    second = ingest_paths(
        [ztf_dir],
        project=project,
        workflow=other,
        subject_set=subject_set_named(project, other, "ZTF for second"),
    )
    assert second.ingested == first.ingested and second.duplicates == 0
    again = ingest_paths(
        [ztf_dir],
        project=project,
        workflow=other,
        subject_set=subject_set_named(project, other, "ZTF for second"),
    )
    assert again.ingested == 0 and again.duplicates == first.ingested
    assert Subject.objects.filter(workflow=workflow).count() == Subject.objects.filter(workflow=other).count()
    shared = Subject.objects.filter(workflow=workflow).values_list("external_id", flat=True)
    assert set(shared) == set(Subject.objects.filter(workflow=other).values_list("external_id", flat=True))


def test_ingest_without_a_set_goes_to_the_workflow_default_set(project, workflow, tmp_path):
    np.save(tmp_path / "two.npy", np.stack([triplet(1), triplet(2)]))
    report = ingest_paths([tmp_path / "two.npy"], project=project, workflow=workflow)
    assert report.ingested == 2
    default = SubjectSet.objects.get(project=project, name="default", workflows=workflow)
    assert default.subjects.count() == 2
    assert ingest_paths([tmp_path / "two.npy"], project=project, workflow=workflow).duplicates == 2


def test_cli_ingest_into_a_named_set(project, workflow, tmp_path, capsys):
    np.save(tmp_path / "two.npy", np.stack([triplet(1), triplet(2)]))
    call_command("ingest", "--project", project.slug, "--workflow", workflow.slug, "--subject-set", "cli set",
                 "--no-progress", str(tmp_path / "two.npy"))  # fmt: skip
    assert SubjectSet.objects.get(name="cli set").subjects.count() == 2
    assert list(SubjectSet.objects.get(name="cli set").workflows.all()) == [workflow]


def test_upload_page_ingests_into_the_chosen_set(client, owner, project, workflow, tmp_path, settings):
    import io

    client.force_login(owner)
    buffer = io.BytesIO()
    np.save(buffer, np.stack([triplet(3)]))
    buffer.seek(0)
    buffer.name = "one.npy"
    resp = client.post(
        reverse("core:upload", args=[project.slug]),
        {"workflow": workflow.pk, "subject_set": "uploaded night", "files": [buffer]},
    )
    assert resp.status_code == 302
    # Eager jobs in tests run at once (or the sweep runs them): the set exists with its subject.
    from jobs.models import Job

    job = Job.objects.get(kind=Job.INGEST)
    if job.status == Job.QUEUED:
        from jobs.services import run_job

        run_job(job.pk)
    assert SubjectSet.objects.get(name="uploaded night").subjects.count() == 1


def test_api_subject_sets_create_update_and_permissions(client, owner, project, workflow, member):
    url = reverse("api_subject_sets", args=[project.slug])
    client.force_login(owner)
    resp = client.post(
        url, {"name": "API night", "workflows": [workflow.pk]}, content_type="application/json"
    )
    assert resp.status_code == 201 and resp.json()["workflows"] == [workflow.pk]
    detail = reverse("api_subject_set", args=[project.slug, resp.json()["id"]])
    other, _ = workflows.create_workflow(project, "other")
    resp = client.patch(
        detail, {"name": "API night 2", "workflows": [other.pk]}, content_type="application/json"
    )
    assert (
        resp.status_code == 200
        and resp.json()["name"] == "API night 2"
        and resp.json()["workflows"] == [other.pk]
    )
    for body, field in (({"name": "API night 2"}, "name"), ({"name": "n", "workflows": [999]}, "workflows"),
                        ({"name": ""}, "name")):  # fmt: skip
        resp = client.post(url, body, content_type="application/json")
        assert resp.status_code == 400 and field in resp.json()
    client.force_login(member("viewer"))
    assert client.get(detail).status_code == 200
    assert client.post(url, {"name": "v"}, content_type="application/json").status_code == 403
    assert client.patch(detail, {"name": "v"}, content_type="application/json").status_code == 403
    client.logout()
    assert client.get(url).status_code in (401, 403)


def test_migration_rule_default_set_is_per_workflow(project, workflow):
    other = Workflow.objects.create(project=project, slug="other", name="Other")
    a = workflows.default_subject_set(workflow)
    b = workflows.default_subject_set(other)
    assert a != b and a.name == b.name == "default"
    assert workflows.default_subject_set(workflow) == a  # found again, not made twice
    assert subject_set_named(project, other, "") == b
