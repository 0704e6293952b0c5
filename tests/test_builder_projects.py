"""The project builder: creating, editing and deleting projects (pages, API, command line), the
lifecycle on the classify and vote paths, safe Markdown and cover images, the terms every export
carries (licence, citation, Croissant), the home page and a volunteer's own page."""

import io
import json
import uuid
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core.authentication import create_token
from core.exporters import start_export
from core.models import Participant, Project, ProjectMembership, Subject, Workflow
from core.storage import open_stored
from jobs.services import run_job
from labeling.models import Vote
from labeling.selection import ticket_for
from loop.exporters import export_bundle
from tests.exports_support import populate
from tests.tasklinks_support import make_subjects

pytestmark = pytest.mark.django_db


def png(size=(32, 16), fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, fmt)
    return out.getvalue()


def bomb() -> bytes:
    """A small PNG whose header says 30000 × 30000 pixels: a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (30000, 30000)).save(out, "PNG")
    return out.getvalue()


def form_data(**extra):
    data = {
        "name": "Supernova Hunters",
        "slug": "sn-hunters",
        "description": "Find supernovae.",
        "long_description": "# Science\n\nWe look for **supernovae**.",
        "is_public": "on",
        "status": "draft",
        "licence": "CC-BY-4.0",
        "contact": "sn@example.org",
    }
    data.update(extra)
    return data


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123456", first_name="Alice")


# ---------------------------------------------------------------------------------------------
# Pages: create, edit, delete


def test_after_signing_up_there_is_a_dashboard_and_a_project_to_create(client):
    response = client.post(
        reverse("core:signup"),
        {"username": "newbie", "password1": "a-long-pass-98765", "password2": "a-long-pass-98765"},
    )
    assert response.status_code == 302
    home = client.get(reverse("core:home_page")).content.decode()
    assert reverse("core:my_projects") in home and reverse("core:project_create") in home
    dashboard = client.get(reverse("core:my_projects"))
    assert dashboard.status_code == 200 and "Create a project" in dashboard.content.decode()


def test_create_a_project_with_a_cover_and_it_starts_as_a_draft(client, alice):
    client.force_login(alice)
    assert client.get(reverse("core:project_create")).status_code == 200
    form = client.get(reverse("core:project_create")).context["form"]
    assert form["status"].value() == "draft"  # the form proposes a draft
    data = form_data(cover_image=SimpleUploadedFile("cover.png", png(), content_type="image/png"))
    response = client.post(reverse("core:project_create"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    project = Project.objects.get(slug="sn-hunters")
    assert project.owner == alice and project.status == Project.DRAFT and project.licence == "CC-BY-4.0"
    assert project.cover_image.name.startswith("covers/") and project.status_changed_at is not None
    cover = client.get(reverse("core:project_cover", args=[project.slug]))
    assert cover.status_code == 200 and b"".join(cover.streaming_content).startswith(b"\x89PNG")
    listing = client.get(reverse("core:my_projects")).content.decode()
    assert "Supernova Hunters" in listing and "owner" in listing


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"slug": "ztf"}, "slug", "Another project already uses this slug"),
        ({"slug": "ZTF"}, "slug", "Another project already uses this slug"),
        ({"slug": "not a slug!"}, "slug", "slug"),
        ({"name": ""}, "name", "required"),
        ({"description": "x" * 301}, "description", "at most 300"),
        ({"licence": "WTFPL"}, "licence", "not one of the available choices"),
        ({"status": "exploded"}, "status", "not one of the available choices"),
        ({"cover_image": ("notes.png", b"this is not an image")}, "cover_image", "not an image"),
        ({"cover_image": ("bomb.png", "BOMB")}, "cover_image", "decompression bomb"),
        ({"cover_image": ("huge.png", "HUGE")}, "cover_image", "too large to show"),
        ({"cover_image": ("cover.bmp", "BMP")}, "cover_image", "not BMP"),
    ],
)
def test_create_refuses_bad_input_and_says_why(client, alice, project, change, field, message):
    client.force_login(alice)
    if "cover_image" in change:
        name, content = change["cover_image"]
        content = {"BOMB": bomb, "HUGE": lambda: png((6000, 6000)), "BMP": lambda: png(fmt="BMP")}.get(
            content, lambda: content
        )()
        change = {"cover_image": SimpleUploadedFile(name, content, content_type="image/png")}
    response = client.post(reverse("core:project_create"), form_data(**change))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors and message.lower() in " ".join(errors[field]).lower(), errors
    assert not Project.objects.filter(owner=alice).exists()


def test_pillow_bomb_limit_is_reported_as_a_bomb(settings):
    from django.core.exceptions import ValidationError

    from core import forms

    huge = SimpleUploadedFile("bomb.png", bomb(), content_type="image/png")
    original = forms.MAX_COVER_PIXELS
    forms.MAX_COVER_PIXELS = 10**12  # only Pillow's own limit left
    try:
        with pytest.raises(ValidationError, match="decompression bomb"):
            forms.validate_cover(huge)
    finally:
        forms.MAX_COVER_PIXELS = original


def test_markdown_is_rendered_and_script_removed(client, project):
    project.long_description = (
        "## Aims\n\nSee [our paper](https://example.org).\n\n<script>alert(1)</script>\n\n"
        '[click](javascript:alert(2)) <img src=x onerror="alert(3)"> <b onclick="x()">bold</b>'
    )
    project.description = "<i>short</i>"
    project.save()
    page = client.get(reverse("core:project_about", args=[project.slug])).content.decode()
    assert "<h2>Aims</h2>" in page and 'href="https://example.org"' in page
    assert "<script>alert" not in page and "javascript:" not in page and "onerror" not in page
    assert "onclick" not in page and "&lt;i&gt;short&lt;/i&gt;" in page


def test_owner_and_scientist_edit_the_lifecycle_viewer_and_outsider_may_not(
    client, project, owner, django_user_model
):
    scientist = django_user_model.objects.create_user("sci", password="pw-sci-123456")
    viewer = django_user_model.objects.create_user("vie", password="pw-vie-123456")
    ProjectMembership.objects.create(project=project, user=scientist, role="scientist")
    ProjectMembership.objects.create(project=project, user=viewer, role="viewer")
    url = reverse("core:project_settings", args=[project.slug])
    data = form_data(name="ZTF renamed", slug="ztf", status="paused", licence="CC0-1.0")
    client.force_login(viewer)
    assert client.post(url, data).status_code == 403
    client.force_login(scientist)
    assert client.get(url).status_code == 200
    assert client.post(url, data).status_code == 302
    project.refresh_from_db()
    assert (project.name, project.status, project.licence) == ("ZTF renamed", "paused", "CC0-1.0")
    assert project.status_changed_at is not None
    # Invalid edits are refused with the reason, nothing changes.
    response = client.post(url, form_data(slug="ztf", name="", status="live"))
    assert response.status_code == 400 and "name" in response.context["form"].errors
    project.refresh_from_db()
    assert project.status == "paused"
    # A scientist may not delete; the owner may, after typing the slug.
    assert (
        client.post(reverse("core:project_delete", args=[project.slug]), {"confirm": "ztf"}).status_code
        == 403
    )
    client.force_login(owner)
    wrong = client.post(reverse("core:project_delete", args=[project.slug]), {"confirm": "nope"})
    assert wrong.status_code == 400 and Project.objects.filter(pk=project.pk).exists()
    done = client.post(reverse("core:project_delete", args=[project.slug]), {"confirm": "ztf"})
    assert done.status_code == 302 and not Project.objects.filter(pk=project.pk).exists()


# ---------------------------------------------------------------------------------------------
# The lifecycle on the classify and vote paths


@pytest.fixture
def served(project, workflow):
    """A participant with a ticket for a subject served now."""
    make_subjects(workflow, n_ordinary=4, n_gold=0)
    subject = Subject.objects.filter(workflow=workflow).first()
    participant = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="s1")
    return subject, participant, ticket_for(workflow, subject, participant)


def _set_status(project, status, when=None):
    project.status = status
    project.status_changed_at = when or timezone.now()
    project.save()


def test_draft_is_for_members_only(client, project, workflow, owner):
    make_subjects(workflow, n_ordinary=2, n_gold=0)
    _set_status(project, Project.DRAFT)
    url = reverse("labeling:classify", args=[project.slug, workflow.slug])
    assert client.get(url).status_code == 404
    assert project.slug not in client.get(reverse("core:home_page")).content.decode()
    api = client.get(reverse("api_workflow_next", args=[project.slug, workflow.pk]))
    assert api.status_code == 404
    client.force_login(owner)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("status, words", [("paused", "is paused"), ("finished", "has finished")])
def test_paused_and_finished_projects_refuse_new_votes_politely(client, project, workflow, status, words):
    make_subjects(workflow, n_ordinary=3, n_gold=0)
    # A volunteer is served a subject while the project is live ...
    page = client.get(reverse("labeling:classify", args=[project.slug, workflow.slug]))
    subject, ticket = page.context["subject"], page.context["ticket"]
    api_served = client.get(reverse("api_workflow_next", args=[project.slug, workflow.pk])).json()
    # ... and another vote is made and kept.
    participant = Participant.objects.get(pk=client.session["participant_id"])
    someone = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="someone")
    kept = Vote.objects.create(workflow=workflow, subject=subject, participant=someone, answer="real")
    # Paused a minute ago for the refusals; the in-flight case below moves the pause after the serving.
    _set_status(project, status, timezone.now() - timedelta(seconds=60))

    classify = client.get(reverse("labeling:classify", args=[project.slug, workflow.slug]))
    assert (
        classify.status_code == 200
        and words in classify.content.decode()
        and "subject" not in classify.context
    )

    # The browser's vote: a page that says so (409), the htmx one the task section only.
    other = Subject.objects.filter(workflow=workflow).exclude(pk=subject.pk).first()
    late_ticket = ticket_for(workflow, other, participant)
    vote = {"subject": other.pk, "answer": "real", "key": str(uuid.uuid4()), "ticket": late_ticket}
    refused = client.post(reverse("labeling:submit_vote", args=[project.slug, workflow.slug]), vote)
    assert refused.status_code == 409 and words in refused.content.decode()
    htmx = client.post(
        reverse("labeling:submit_vote", args=[project.slug, workflow.slug]),
        vote,
        headers={"HX-Request": "true"},
    )
    assert htmx.status_code == 409 and 'id="task"' in htmx.content.decode()
    assert "<html" not in htmx.content.decode()

    # The API: 4xx JSON with the reason, for next/ and for the vote.
    nxt = client.get(reverse("api_workflow_next", args=[project.slug, workflow.pk]))
    assert nxt.status_code == 409 and words in nxt.json()["detail"]
    api_vote = client.post(
        reverse("api_vote_create"),
        {"workflow": workflow.pk, "subject": other.pk, "answer": "real", "idempotency_key": str(uuid.uuid4()),
         "ticket": late_ticket},
        content_type="application/json",
    )  # fmt: skip
    assert api_vote.status_code == 409 and words in api_vote.json()["detail"]
    assert Vote.objects.filter(pk=kept.pk).exists()  # votes already made are kept
    assert Vote.objects.filter(subject=other).count() == 0 and Vote.objects.count() == 1

    _set_status(project, status, timezone.now() + timedelta(seconds=60))
    in_flight = client.post(
        reverse("api_vote_create"),
        {"workflow": workflow.pk, "subject": api_served["subject"], "answer": "bogus",
         "idempotency_key": str(uuid.uuid4()), "ticket": api_served["ticket"]},
        content_type="application/json",
    )  # fmt: skip
    if status == "paused":  # served before the pause: the volunteer's answer is kept
        assert in_flight.status_code == 201, in_flight.json()
    else:  # finished is read-only
        assert in_flight.status_code == 409
    assert ticket  # the page served one too


def test_similarity_page_says_the_project_is_paused(client, project):
    sim = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    _set_status(project, Project.PAUSED)
    page = client.get(reverse("similarity:classify", args=[project.slug, sim.slug]))
    assert page.status_code == 200 and "is paused" in page.content.decode()
    answer = client.post(reverse("similarity:submit", args=[project.slug, sim.slug]), {"task": 0})
    assert answer.status_code in (400, 409)


def test_imports_are_not_refused_by_the_lifecycle(project, workflow):
    from labeling.services import record_vote

    make_subjects(workflow, n_ordinary=1, n_gold=0)
    _set_status(project, Project.FINISHED)
    participant = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="imp")
    result = record_vote(
        workflow=workflow,
        subject_id=Subject.objects.get(workflow=workflow).pk,
        participant=participant,
        answer="real",
        idempotency_key=uuid.uuid4(),
        source="import",
        trusted=True,
    )
    assert result.created


# ---------------------------------------------------------------------------------------------
# API


def _auth(user):
    return {"Authorization": f"Bearer {create_token(user, 'test')[1]}"}


def test_api_create_update_delete_with_the_pages_rules(client, alice, owner, project, django_user_model):
    created = client.post(
        reverse("api_projects"),
        {"name": "Kilonovae", "slug": "kilo", "description": "Short.", "licence": "CC-BY-SA-4.0"},
        content_type="application/json",
        headers=_auth(alice),
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["status"] == "draft" and body["role"] == "owner" and body["licence"] == "CC-BY-SA-4.0"
    kilo = Project.objects.get(slug="kilo")
    assert kilo.owner == alice

    duplicate = client.post(
        reverse("api_projects"), {"name": "Again", "slug": "KILO"}, content_type="application/json",
        headers=_auth(owner),
    )  # fmt: skip
    assert duplicate.status_code == 400 and "already uses this slug" in duplicate.json()["slug"][0]
    bad = client.post(
        reverse("api_projects"), {"name": "X", "slug": "x", "licence": "nope", "status": "gone"},
        content_type="application/json", headers=_auth(owner),
    )  # fmt: skip
    assert bad.status_code == 400 and {"licence", "status"} <= set(bad.json())
    cover = client.post(
        reverse("api_projects"),
        {
            "name": "Y",
            "slug": "y",
            "cover_image": SimpleUploadedFile("c.png", bomb(), content_type="image/png"),
        },
        headers=_auth(owner),
    )
    assert cover.status_code == 400 and "decompression bomb" in cover.json()["cover_image"][0]
    assert client.post(reverse("api_projects"), {"name": "Z", "slug": "z"}).status_code in (401, 403)

    url = reverse("api_project", args=["kilo"])
    scientist = django_user_model.objects.create_user("sci", password="pw-sci-123456")
    viewer = django_user_model.objects.create_user("vie", password="pw-vie-123456")
    expert = django_user_model.objects.create_user("exp", password="pw-exp-123456")
    for user, role in ((scientist, "scientist"), (viewer, "viewer"), (expert, "expert")):
        ProjectMembership.objects.create(project=kilo, user=user, role=role)
    patch = {"status": "live", "long_description": "Now *live*."}
    expected = {owner: 404, expert: 404, viewer: 403, scientist: 200, alice: 200}
    for user, code in expected.items():
        got = client.patch(url, patch, content_type="application/json", headers=_auth(user))
        assert got.status_code == code, (user.username, got.content)
    kilo.refresh_from_db()
    assert kilo.status == "live" and kilo.status_changed_at is not None
    assert client.patch(url, patch, content_type="application/json").status_code in (401, 403)
    assert client.delete(url, headers=_auth(scientist)).status_code == 403
    assert client.delete(url, headers=_auth(owner)).status_code == 404
    assert client.delete(url, headers=_auth(alice)).status_code == 204
    assert not Project.objects.filter(slug="kilo").exists()


# ---------------------------------------------------------------------------------------------
# The command line


def test_create_project_command_is_idempotent(django_user_model):
    django_user_model.objects.create_superuser("admin", password="pw-admin-123456")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123456")
    out = io.StringIO()
    call_command("create_project", "m31", "--name", "Andromeda", "--private", "--owner", "bob", stdout=out)
    project = Project.objects.get(slug="m31")
    assert "Created project 'm31'" in out.getvalue()
    assert (project.owner, project.is_public, project.licence, project.status) == (
        bob,
        False,
        "CC-BY-4.0",
        "draft",
    )
    before = Project.objects.values().get(slug="m31")
    again = io.StringIO()
    call_command("create_project", "m31", "--name", "Andromeda", "--private", "--owner", "bob", stdout=again)
    assert "nothing changed" in again.getvalue()
    assert Project.objects.values().get(slug="m31") == before and Project.objects.count() == 1
    with pytest.raises(CommandError, match="other settings"):
        call_command("create_project", "m31", "--name", "Triangulum", "--owner", "bob")
    call_command(
        "create_project", "m33", "--name", "Triangulum", "--licence", "CC0-1.0", stdout=io.StringIO()
    )
    assert Project.objects.get(slug="m33").owner.username == "admin"
    with pytest.raises(CommandError, match="No user named"):
        call_command("create_project", "m51", "--name", "Whirlpool", "--owner", "nobody")
    with pytest.raises(CommandError, match="not a slug"):
        call_command("create_project", "m 51", "--name", "Whirlpool", "--owner", "bob")


# ---------------------------------------------------------------------------------------------
# Export terms and Croissant


@pytest.fixture
def data(project, workflow, django_user_model):
    project.contact = "ZTF team <ztf@example.org>"
    project.licence = "CC-BY-SA-4.0"
    project.save()
    return populate(project, workflow, django_user_model, n_subjects=8)


def test_every_export_carries_licence_and_citation(data, owner):
    import pyarrow.parquet as pq
    from astropy.io import fits
    from astropy.table import Table

    for fmt in ("parquet", "fits", "ecsv", "csv"):
        job = start_export(project=data.project, user=owner, role="owner", kind="labels", fmt=fmt)
        run_job(job.pk)
        job.refresh_from_db()
        with open_stored(job.result.name) as handle:
            content = handle.read()
        if fmt == "parquet":
            meta = json.loads(pq.read_schema(io.BytesIO(content)).metadata[b"skyvote"])
        elif fmt == "fits":
            header = fits.open(io.BytesIO(content))[0].header
            meta = {"licence": header["LICENSE"], "citation": header["CITATION"]}
        elif fmt == "ecsv":
            meta = Table.read(content.decode(), format="ascii.ecsv").meta
        else:
            from core.exporters import download_response

            response = download_response(job)
            meta = {"licence": response["X-Skyvote-License"], "citation": response["X-Skyvote-Citation"]}
            assert response["Link"] == '<https://creativecommons.org/licenses/by-sa/4.0/>; rel="license"'
        assert meta["licence"] == "CC-BY-SA-4.0", fmt
        year = str(timezone.now().year)
        assert (
            "ZTF team" in meta["citation"]
            and year in meta["citation"]
            and "/p/ztf/about/" in meta["citation"]
        )


def test_training_bundle_has_terms_and_a_valid_croissant(data, tmp_path):
    path = tmp_path / "bundle.zip"
    export_bundle(data.project, path, workflow=data.workflow)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        croissant = json.loads(zf.read("croissant.json"))
        zf.extractall(tmp_path / "bundle")
    assert manifest["licence"] == "CC-BY-SA-4.0" and "ZTF transients" in manifest["citation"]
    assert "croissant.json" in manifest["files"]
    assert croissant["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    assert croissant["license"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert croissant["citeAs"] == manifest["citation"]
    fields = {f["name"] for rs in croissant["recordSet"] for f in rs["field"] if rs["@id"] == "labels"}
    assert {"label", "target", "p_real", "split", "external_id"} <= fields
    assert {d["name"] for d in croissant["distribution"]} >= {"images.npy", "labels.csv"}

    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=tmp_path / "bundle" / "croissant.json")
    issues = dataset.metadata.ctx.issues
    assert not issues.errors, issues.report()
    records = list(dataset.records("labels"))
    assert len(records) == manifest["counts"]["subjects"]


# ---------------------------------------------------------------------------------------------
# Home page and /me/


def test_home_lists_live_public_projects_with_progress_and_each_workflow_once(
    client, project, workflow, owner, django_user_model
):
    members = [django_user_model.objects.create_user(f"m{i}", password="pw-m-1234567") for i in range(3)]
    for user in members:
        ProjectMembership.objects.create(project=project, user=user, role="viewer")
    make_subjects(workflow, n_ordinary=3, n_gold=1)
    Subject.objects.filter(pk=Subject.objects.filter(workflow=workflow).first().pk).update(
        status=Subject.RETIRED
    )
    draft = Project.objects.create(
        slug="secret-draft", name="Secret draft", owner=owner, status=Project.DRAFT
    )
    paused = Project.objects.create(slug="paused-one", name="Paused one", owner=owner, status=Project.PAUSED)
    page = client.get(reverse("core:home_page")).content.decode()
    assert page.count(f">{workflow.name}</a>") == 1
    assert "25% retired" in page and draft.name not in page and paused.name not in page
    client.force_login(members[0])
    page = client.get(reverse("core:home_page")).content.decode()
    assert page.count(f">{workflow.name}</a>") == 1 and page.count(">ZTF transients</a>") == 1
    client.force_login(owner)
    page = client.get(reverse("core:home_page")).content.decode()
    assert draft.name in page and paused.name in page


def test_me_shows_my_classifications_consensus_and_gold_accuracy(
    client, project, workflow, django_user_model
):
    vol = django_user_model.objects.create_user("vol", password="pw-vol-1234567")
    participant = Participant.objects.create(kind=Participant.USER, user=vol)
    ordinary, gold = make_subjects(workflow, n_ordinary=2, n_gold=2)
    Subject.objects.filter(pk=ordinary[0].pk).update(status=Subject.RETIRED, p_real=0.9)
    Vote.objects.create(workflow=workflow, subject=ordinary[0], participant=participant, answer="real")
    Vote.objects.create(workflow=workflow, subject=ordinary[1], participant=participant, answer="bogus")
    for subject, right in zip(gold, (True, False), strict=True):
        answer = subject.gold_label if right else ("bogus" if subject.gold_label == "real" else "real")
        Vote.objects.create(
            workflow=workflow, subject=subject, participant=participant, answer=answer, was_gold=True,
            gold_correct=right,
        )  # fmt: skip
    client.force_login(vol)
    page = client.get(reverse("core:me"))
    assert page.status_code == 200
    rows = page.context["workflows"]
    assert len(rows) == 1 and rows[0]["n"] == 4 and rows[0]["accuracy"] == 0.5
    recent = {r["subject"].pk: r["consensus"] for r in page.context["recent"]}
    assert recent[ordinary[0].pk] == "real" and recent[ordinary[1].pk] == ""
    assert "50% of 2 expert-checked" in page.content.decode()
    client.logout()
    assert client.get(reverse("core:me")).status_code == 200  # anonymous: nothing yet, no error
