"""Private means private: a project that is not public is seen, classified and voted on only by its
members (any role) and its panel workers; its files are never at a public URL.

- volunteer pages, votes (page and API) and the home page keep a private project from outsiders (404);
- every subject image goes through the access-checked image view (core.views_files): a private
  project's images need a membership or a signed URL, and its arrays and PNGs are in private storage;
- exports, checkpoints and model plots are in private storage under random names and reach only
  those whose role allows them, through views (with X-Accel-Redirect / X-Sendfile when configured);
- staff are not owners of every project unless the deployment says so; the demo owner is not staff.
"""

import hashlib
import re
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core.exporters import start_export
from core.ingest import add_subject
from core.models import ModelVersion, Project, ProjectMembership, Subject, Workflow
from core.storage import private_storage
from jobs.models import Job
from labeling.models import Vote
from mlcore.synth import generate_triplets
from panels.models import Assignment
from tests.tasklinks_support import make_batch, start, urls_of

pytestmark = pytest.mark.django_db

IMG_SRC = re.compile(r'<img src="([^"]+)"')
PNG = b"\x89PNG\r\n\x1a\n"
UUID_HEX = r"[0-9a-f]{32}"


def add_subjects(project, workflow, n, prefix, gold=0):
    batch = generate_triplets(n, seed=3)
    subjects = []
    for i in range(n):
        subject, _ = add_subject(
            project=project,
            workflow=workflow,
            subject_set=None,
            external_id=f"{prefix}-{i}",
            array=batch.images[i],
            metadata={},
            source="synthetic",
            truth_label="real" if batch.labels[i] else "bogus",
        )
        if i < gold:
            Subject.objects.filter(pk=subject.pk).update(gold_label="real" if i % 2 == 0 else "bogus")
        subjects.append(subject)
    return subjects


@pytest.fixture
def world(django_user_model):
    users = {
        name: django_user_model.objects.create_user(name, password=f"pw-{name}-123456")
        for name in ("owner", "viewer", "expert", "rival")
    }
    users["staff"] = django_user_model.objects.create_user("staff", password="pw-staff-123456", is_staff=True)
    secret = Project.objects.create(
        slug="secret", name="Secret survey", owner=users["owner"], is_public=False
    )
    for role in ("viewer", "expert"):
        ProjectMembership.objects.create(project=secret, user=users[role], role=role)
    Project.objects.create(slug="rivalry", name="Rival survey", owner=users["rival"])
    rb = Workflow.objects.create(project=secret, slug="rb", name="Real or bogus?")
    sim = Workflow.objects.create(project=secret, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    open_project = Project.objects.create(slug="open", name="Open survey", owner=users["rival"])
    open_rb = Workflow.objects.create(project=open_project, slug="rb", name="Real or bogus?")
    return SimpleNamespace(
        users=users,
        secret=secret,
        rb=rb,
        sim=sim,
        open=open_project,
        open_rb=open_rb,
        subjects=add_subjects(secret, rb, 6, "sec", gold=2),
        open_subject=add_subjects(open_project, open_rb, 1, "pub")[0],
    )


def client_for(world, who) -> Client:
    client = Client()
    if who != "anonymous":
        client.force_login(world.users[who])
    return client


def bare(url: str) -> str:
    """An image URL without its signature: what someone who guessed the path would ask for."""
    return urlsplit(url).path


# ---------------------------------------------------------------------------------------------
# 1. Volunteering in a private project


def test_outsiders_get_404_on_a_private_projects_volunteer_pages_and_members_get_them(world):
    rb, sim = world.rb, world.sim
    gets = [
        reverse("labeling:classify", args=["secret", "rb"]),
        reverse("similarity:classify", args=["secret", "sim"]),
        reverse("labeling:field_guide", args=["secret"]),
    ]
    subject = world.subjects[3]
    posts = [
        (reverse("labeling:submit_vote", args=["secret", "rb"]), {"subject": subject.pk, "answer": "real"}),
        (reverse("labeling:tutorial_seen", args=["secret", "rb"]), {}),
        (reverse("similarity:submit", args=["secret", "sim"]), {}),
        (reverse("similarity:tutorial_seen", args=["secret", "sim"]), {}),
    ]
    for who in ("anonymous", "rival", "staff"):
        client = client_for(world, who)
        for url in gets:
            assert client.get(url).status_code == 404, (who, url)
        for url, data in posts:
            assert (
                client.post(url, {**data, "key": "00000000-0000-4000-8000-000000000001"}).status_code == 404
            )
    assert not Vote.objects.filter(workflow__in=[rb, sim]).exists()

    for who in ("owner", "viewer", "expert"):
        client = client_for(world, who)
        for url in gets:
            assert client.get(url).status_code == 200, (who, url)
        for url, data in posts:
            assert client.post(url, data).status_code != 404, (who, url)


def test_the_vote_api_refuses_outsiders_of_a_private_project_and_reads_stay_scoped(world):
    subject = world.subjects[3]
    body = {
        "workflow": world.rb.pk,
        "subject": subject.pk,
        "answer": "real",
        "idempotency_key": "00000000-0000-4000-8000-000000000002",
    }
    for who in ("anonymous", "rival", "staff"):
        api = APIClient()
        if who != "anonymous":
            api.force_authenticate(world.users[who])
        assert api.post(reverse("api_vote_create"), body, format="json").status_code == 404, who
        assert api.get(reverse("api_subjects", args=["secret"])).status_code in (401, 403, 404), who
    assert not Vote.objects.filter(workflow=world.rb).exists()

    member = APIClient()
    member.force_authenticate(world.users["viewer"])
    assert member.post(reverse("api_vote_create"), body, format="json").status_code != 404
    # The projects list: your projects only; anonymous callers get nothing at all.
    assert APIClient().get(reverse("api_projects")).status_code in (401, 403)
    rival = APIClient()
    rival.force_authenticate(world.users["rival"])
    assert "secret" not in {p["slug"] for p in rival.get(reverse("api_projects")).json()["results"]}
    assert "secret" in {p["slug"] for p in member.get(reverse("api_projects")).json()["results"]}


def test_the_home_page_lists_public_projects_and_private_ones_only_to_their_members(world):
    home = reverse("core:home_page")
    for who in ("anonymous", "rival", "staff"):
        html = client_for(world, who).get(home).content.decode()
        assert "Open survey" in html and "Secret survey" not in html, who
    for who in ("owner", "viewer", "expert"):
        html = client_for(world, who).get(home).content.decode()
        assert "Open survey" in html and "Secret survey" in html, who


def test_task_links_of_a_private_project_keep_working_with_their_images(world):
    batch = make_batch(world.rb, world.users["owner"], gold_share=0.2)
    worker = Client()  # a panel worker: no account, no membership
    assert start(worker, batch, "W0001").status_code == 302
    urls = urls_of(Assignment.objects.get(worker_id="W0001"), batch)
    page = worker.get(urls["task"])
    assert page.status_code == 200
    images = IMG_SRC.findall(page.content.decode())
    assert len(images) == 3
    for src in images:
        src = src.replace("&amp;", "&")
        assert src.startswith("/subjects/") and not src.startswith("/media/")
        response = worker.get(src)
        assert response.status_code == 200 and response.getvalue().startswith(PNG)
        assert worker.get(bare(src)).status_code == 404  # the link's signature, not the worker, opens it
    subject_id = int(re.search(r'name="subject" value="(\d+)"', page.content.decode()).group(1))
    key = re.search(r'name="key" value="([0-9a-f-]{36})"', page.content.decode()).group(1)
    voted = worker.post(urls["vote"], {"subject": subject_id, "answer": "real", "key": key})
    assert voted.status_code == 302 and Vote.objects.filter(workflow=world.rb).count() == 1


# ---------------------------------------------------------------------------------------------
# 2. Subject images and files


def test_a_private_projects_subject_files_are_in_private_storage_and_not_served_from_media(world, settings):
    subject = world.subjects[0]
    names = [subject.data.name, *subject.images.values()]
    assert len(names) == 4
    for name in names:
        assert private_storage().exists(name) and not default_storage.exists(name), name
    assert not (Path(settings.MEDIA_ROOT) / "subjects" / str(world.secret.pk)).exists()

    anonymous = Client()
    assert anonymous.get(settings.MEDIA_URL + subject.images["science"]).status_code == 404
    # A public project's PNGs are served from media (cacheable); its arrays never are.
    public = world.open_subject
    assert default_storage.exists(public.images["science"])
    served = anonymous.get(settings.MEDIA_URL + public.images["science"])
    assert served.status_code == 200 and served.getvalue().startswith(PNG)
    assert default_storage.exists(public.data.name)
    assert anonymous.get(settings.MEDIA_URL + public.data.name).status_code == 404


def test_private_subject_images_need_a_membership_or_a_signed_url(world):
    from core.views_files import _signature

    subject = world.subjects[0]
    url = subject.image_url("science")
    assert url.startswith(reverse("core:subject_image", args=[subject.pk, "science"]) + "?")

    anonymous = Client()
    signed = anonymous.get(url)
    assert signed.status_code == 200 and signed.getvalue().startswith(PNG)
    assert signed["Content-Type"] == "image/png" and signed["Cache-Control"].startswith("private")
    assert anonymous.get(bare(url)).status_code == 404
    query = parse_qs(urlsplit(url).query)
    tampered = f"{bare(url)}?e={query['e'][0]}&t={'0' * 32}"
    assert anonymous.get(tampered).status_code == 404
    other_subject = (
        f"{reverse('core:subject_image', args=[world.subjects[1].pk, 'science'])}?{urlsplit(url).query}"
    )
    assert anonymous.get(other_subject).status_code == 404
    past = int(time.time()) - 10
    expired = f"{bare(url)}?e={past}&t={_signature(subject.pk, 'science', past)}"
    assert anonymous.get(expired).status_code == 404

    for who in ("rival", "staff"):
        assert client_for(world, who).get(bare(url)).status_code == 404, who
    for who in ("owner", "viewer", "expert"):
        assert client_for(world, who).get(bare(url)).status_code == 200, who

    public = world.open_subject
    response = anonymous.get(bare(public.image_url("science")))
    assert response.status_code == 200 and response["Cache-Control"].startswith("public")


def test_pages_and_the_api_give_members_image_urls_of_the_image_view(world):
    viewer = client_for(world, "viewer")
    html = viewer.get(reverse("labeling:classify", args=["secret", "rb"])).content.decode()
    images = [src.replace("&amp;", "&") for src in IMG_SRC.findall(html)]
    assert len(images) == 3
    for src in images:
        assert src.startswith("/subjects/")
        assert viewer.get(src).status_code == 200

    api = APIClient()
    api.force_authenticate(world.users["viewer"])
    rows = api.get(reverse("api_subjects", args=["secret"])).json()["results"]
    urls = [url for row in rows for url in row["images"].values()]
    assert len(urls) == 3 * len(world.subjects)
    assert all(url.startswith("http://testserver/subjects/") for url in urls)
    # Signed: a script loads it without a session.
    assert Client().get(urls[0].replace("http://testserver", "")).status_code == 200


def test_a_project_changing_visibility_needs_no_file_moves(world, settings):
    subject = world.subjects[0]
    image = bare(subject.image_url("science"))
    classify = reverse("labeling:classify", args=["secret", "rb"])
    anonymous = Client()

    Project.objects.filter(pk=world.secret.pk).update(is_public=True)
    assert anonymous.get(classify).status_code == 200
    response = anonymous.get(image)
    assert response.status_code == 200 and response["Cache-Control"].startswith("public")

    Project.objects.filter(pk=world.secret.pk).update(is_public=False)
    assert anonymous.get(classify).status_code == 404
    assert anonymous.get(image).status_code == 404

    # A public project made private: its PNGs stay in media, but neither URL serves them any more.
    public = world.open_subject
    Project.objects.filter(pk=world.open.pk).update(is_public=False)
    assert anonymous.get(settings.MEDIA_URL + public.images["science"]).status_code == 404
    assert anonymous.get(bare(public.image_url("science"))).status_code == 404
    assert client_for(world, "rival").get(bare(public.image_url("science"))).status_code == 200  # its owner


# ---------------------------------------------------------------------------------------------
# 3. Exports, checkpoints and plots


def test_exports_are_private_files_under_random_names(world, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = start_export(
            project=world.secret, user=world.users["owner"], role="owner", kind="votes", fmt="csv"
        )
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert re.fullmatch(rf"jobs/{world.secret.pk}/{job.pk}/{UUID_HEX}\.csv", job.result.name)
    assert private_storage().exists(job.result.name) and not default_storage.exists(job.result.name)
    assert not (Path(settings.MEDIA_ROOT) / "jobs").exists()
    assert Client().get(settings.MEDIA_URL + job.result.name).status_code == 404

    page = reverse("core:export_download", args=["secret", job.pk])
    owner = client_for(world, "owner")
    response = owner.get(page)
    assert response.status_code == 200 and response.streaming
    assert re.search(
        r'attachment; filename="secret-all-votes-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"]
    )
    assert client_for(world, "rival").get(page).status_code == 404
    assert client_for(world, "viewer").get(page).status_code == 200  # viewers export (without worker ids)
    assert client_for(world, "expert").get(page).status_code == 403
    api = APIClient()
    api.force_authenticate(world.users["owner"])
    download = api.get(reverse("api_export_download", args=["secret", job.pk]))
    assert download.status_code == 200 and "secret-all-votes-" in download["Content-Disposition"]

    # An export written before (in media, under its old name) still downloads.
    old = Job.objects.create(
        project=world.secret, kind=Job.EXPORT, status=Job.SUCCEEDED, params={"kind": "votes", "format": "csv"}
    )
    old.result.save("secret-all-votes-20261201T101500Z.csv", ContentFile(b"id\n1\n"))
    again = owner.get(reverse("core:export_download", args=["secret", old.pk]))
    assert again.status_code == 200 and again.getvalue() == b"id\n1\n"


def test_checkpoints_and_plots_are_private_and_served_to_readers_only(
    world, settings, tmp_path, django_capture_on_commit_callbacks
):
    from loop import services as loop
    from tests.loop_support import make_pool, tiny_loop_settings

    tiny_loop_settings(settings, tmp_path)
    workflow = Workflow.objects.create(project=world.secret, slug="loop", name="Loop")
    make_pool(world.secret, workflow, n=80, n_labeled=30, n_gold=20)
    with django_capture_on_commit_callbacks(execute=True):
        job, _ = loop.request_training(workflow)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    html = client_for(world, "viewer").get(reverse("loop:models", args=["secret", "loop"])).content.decode()
    for plot in ("roc", "reliability", "learning_curve"):
        url = reverse("loop:plot", args=["secret", "loop", 1, plot])
        assert url in html
        assert client_for(world, "rival").get(url).status_code == 404  # before it is drawn, and after
        response = client_for(world, "viewer").get(url)  # drawn now, then stored
        assert response.status_code == 200 and response.getvalue().startswith(PNG)
        assert response["Cache-Control"].startswith("private")
        assert client_for(world, "rival").get(url).status_code == 404

    version = ModelVersion.objects.get(workflow=workflow)
    names = [version.artifact.name, *version.metrics["plots"].values()]
    assert re.fullmatch(rf"models/{workflow.pk}/v1-{UUID_HEX}\.pt", version.artifact.name)
    assert len(names) == 4 and all(re.search(rf"-{UUID_HEX}\.(pt|png)$", name) for name in names)
    for name in names:
        assert private_storage().exists(name) and not default_storage.exists(name), name
        assert Client().get(settings.MEDIA_URL + name).status_code == 404
    assert (
        client_for(world, "viewer").get(reverse("loop:plot", args=["secret", "loop", 1, "nope"])).status_code
        == 404
    )

    api = APIClient()
    api.force_authenticate(world.users["viewer"])
    artifact = api.get(reverse("api_model_version_artifact", args=["secret", version.pk]))
    assert artifact.status_code == 200
    assert 'filename="secret-loop-classifier-v1.pt"' in artifact["Content-Disposition"]
    assert hashlib.sha256(artifact.getvalue()).hexdigest() == version.artifact_sha256
    rival = APIClient()
    rival.force_authenticate(world.users["rival"])
    assert rival.get(reverse("api_model_version_artifact", args=["secret", version.pk])).status_code == 404


def test_the_web_server_sends_authorised_files_when_a_sendfile_header_is_set(
    world, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = start_export(
            project=world.secret, user=world.users["owner"], role="owner", kind="votes", fmt="csv"
        )
    job.refresh_from_db()
    owner = client_for(world, "owner")
    download = reverse("core:export_download", args=["secret", job.pk])
    public_image = bare(world.open_subject.image_url("science"))

    settings.SKYVOTE_SENDFILE_HEADER = "X-Accel-Redirect"
    response = owner.get(download)
    assert response.status_code == 200 and not response.streaming and response.content == b""
    assert response["X-Accel-Redirect"] == f"/_protected/private/{job.result.name}"
    assert response["Content-Disposition"].startswith('attachment; filename="secret-all-votes-')
    image = Client().get(public_image)
    assert image["X-Accel-Redirect"] == "/_protected/media/" + world.open_subject.images["science"]
    assert image["Content-Type"] == "image/png"
    assert client_for(world, "rival").get(download).status_code == 404  # still checked first

    settings.SKYVOTE_SENDFILE_HEADER = "X-Sendfile"
    response = owner.get(download)
    assert response["X-Sendfile"] == str(Path(settings.PRIVATE_ROOT) / job.result.name)


# ---------------------------------------------------------------------------------------------
# 4. Staff


def test_staff_are_owners_only_where_the_deployment_says_so(world, settings, django_user_model):
    staff = world.users["staff"]
    root = django_user_model.objects.create_superuser("root", password="pw-root-123456")
    dashboard = reverse("labeling:project_dashboard", args=["secret"])
    for user in (staff, root):
        assert world.secret.role_of(user) is None
        client = Client()
        client.force_login(user)
        assert client.get(dashboard).status_code == 404
        assert client.get(reverse("labeling:classify", args=["secret", "rb"])).status_code == 404

    settings.SKYVOTE_STAFF_SEE_ALL_PROJECTS = True
    for user in (staff, root):
        assert world.secret.role_of(user) == "owner"
        client = Client()
        client.force_login(user)
        assert client.get(dashboard).status_code == 200
    assert world.secret.role_of(world.users["rival"]) is None


def test_the_demo_owner_is_an_ordinary_owner_not_staff(settings, tmp_path, monkeypatch, django_user_model):
    import skyvote.celery

    settings.VAR_DIR = tmp_path
    monkeypatch.setattr(skyvote.celery, "declare_queues", lambda: None)
    django_user_model.objects.create_user("demo", is_staff=True)  # as earlier versions made it
    call_command("seed_demo", "--subjects", "2", "--gold", "0", "--history", "0", "--no-similarity")
    demo = django_user_model.objects.get(username="demo")
    assert not demo.is_staff and not demo.is_superuser
    assert Project.objects.get(slug="ztf-demo").role_of(demo) == "owner"
