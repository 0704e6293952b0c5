"""Pages that agree with each other: counts that say what they count and add up, one pseudonym per
participant everywhere, the exports list and its empty message, the favicon, workflow names once on
the home page, readable field-guide images, the learning curve with one model version."""

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core.models import ModelVersion, Participant, ProjectMembership, Subject, Workflow
from jobs.models import Job
from labeling.activity import vote_activity
from labeling.labels import training_labels
from labeling.models import Vote
from labeling.services import record_vote
from loop import services as loop
from tests.loop_support import make_pool, tiny_loop_settings

pytestmark = pytest.mark.django_db


def vote(workflow, subject, participant, answer):
    record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=uuid.uuid4(),
        trusted=True,
    )


def by_testid(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{name}">([^<]*)<', html)
    assert match, f"no {name} on the page"
    return match.group(1).strip()


def table_rows(html: str, name: str) -> list[list[str]]:
    """The cells (tags stripped) of each row of the table with data-testid=name."""
    table = re.search(rf'<table data-testid="{name}">(.*?)</table>', html, re.S)
    assert table, f"no {name} table on the page"
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S):
        rows.append(
            [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        )
    return rows


@pytest.fixture
def member(django_user_model, project):
    def make(role):
        user = django_user_model.objects.create_user(f"{role}-user", password="pw-123456789")
        if role != "stranger":
            ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


# --- The dashboard: answers and skips, the same definition in the headline and the hour table ------


@pytest.fixture
def voted(workflow, make_subjects):
    """3 answers and 2 skips from two volunteers; one answer made 30 hours ago."""
    workflow.retirement_limit = 100
    workflow.save(update_fields=["retirement_limit"])
    s1, s2, s3 = make_subjects(3)
    alice = Participant.objects.create(kind=Participant.ANONYMOUS, session_key=uuid.uuid4().hex)
    bob = Participant.objects.create(kind=Participant.ANONYMOUS, session_key=uuid.uuid4().hex)
    vote(workflow, s1, alice, "real")
    vote(workflow, s2, alice, "skip")
    vote(workflow, s3, alice, "bogus")
    vote(workflow, s1, bob, "skip")
    vote(workflow, s2, bob, "real")
    return alice, bob


def test_dashboard_headline_and_hour_table_count_answers_and_skips_alike(client, owner, workflow, voted):
    client.force_login(owner)
    url = reverse("labeling:project_dashboard", args=[workflow.project.slug])
    html = client.get(url).content.decode()
    assert by_testid(html, "n-votes") == "3" and "answers (skips not counted)" in html
    assert by_testid(html, "n-skips") == "2"
    rows = table_rows(html, "per-hour")
    assert rows[0] == ["Hour (UTC)", "Answers (skips not counted)", "Skips"]
    hours, total = rows[1:-1], rows[-1]
    assert sum(int(r[1]) for r in hours) == int(total[1]) == 3
    assert sum(int(r[2]) for r in hours) == int(total[2]) == 2

    # An answer older than the table's 24 hours: the headline keeps it, the table says what it covers.
    old = Vote.objects.filter(answer="bogus").get()
    Vote.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=30))
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()  # the 10-second refresh: same numbers
    rows = table_rows(html, "per-hour")
    assert by_testid(html, "n-votes") == "3"
    assert sum(int(r[1]) for r in rows[1:-1]) == int(rows[-1][1]) == 2
    assert "The headline counts all time: 3 answers and 2 skips" in html


def test_vote_activity_is_one_definition_for_totals_and_hours(workflow, voted):
    activity = vote_activity(workflow.project)
    votes = Vote.objects.filter(workflow__project=workflow.project)
    assert activity.answers == votes.exclude(answer=Vote.SKIP).count() == 3
    assert activity.skips == votes.filter(answer=Vote.SKIP).count() == 2
    assert activity.window_answers == sum(r.answers for r in activity.per_hour) == activity.answers
    assert activity.window_skips == sum(r.skips for r in activity.per_hour) == activity.skips
    assert activity.people == 2


# --- Pseudonyms ------------------------------------------------------------------------------------


def test_every_page_that_lists_participants_shows_the_same_pseudonym(client, owner, workflow, voted):
    alice, bob = voted
    project = workflow.project
    client.force_login(owner)
    dashboard = client.get(reverse("labeling:project_dashboard", args=[project.slug])).content.decode()
    cells = {row[-1] for row in table_rows(dashboard, "latest-votes")[1:]}
    assert cells == {project.pseudonym(alice.pk), project.pseudonym(bob.pk)}
    volunteers = client.get(
        reverse("labeling:crowd_volunteers", args=[project.slug, workflow.slug])
    ).content.decode()
    for person in (alice, bob):
        assert project.pseudonym(person.pk) in volunteers
    # Pages about subjects name no participant at all.
    for name in ("crowd_review", "crowd_gold"):
        html = client.get(reverse(f"labeling:{name}", args=[project.slug, workflow.slug])).content.decode()
        assert project.pseudonym(alice.pk) not in html and f"<td>{alice.pk}</td>" not in html


# --- The model page: labels decided now and per version, by the definitions a round uses -----------


@pytest.fixture
def pool(project, workflow, settings, tmp_path):
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    pool = make_pool(project, workflow, n=48, n_labeled=24, n_gold=10, seed=5)
    # Held out from training: a decided one (counted), an undecided one waiting for review (not counted).
    Subject.objects.filter(pk=pool.labeled[0]).update(is_holdout=True)
    Subject.objects.filter(pk=pool.unlabeled[0]).update(
        is_holdout=True, status=Subject.RETIRED, needs_review=True, vote_count=5, p_real=0.5
    )
    return pool


def test_label_counts_are_what_a_round_records(workflow, pool):
    data = loop._gather_round_data(workflow, None, lambda *a: None)
    counts = loop.label_counts(workflow)
    assert counts.decided == data.n_labels == len(training_labels(workflow)) == 24 + 10
    assert counts.held_out == len(data.heldout_ids) == 10 + 1
    assert counts.trainable == len(data.train_ids) == loop.trainable_label_count(workflow) == 23


def test_model_page_counts_agree_with_the_versions_table(client, owner, workflow, pool):
    data = loop._gather_round_data(workflow, None, lambda *a: None)
    ModelVersion.objects.create(
        workflow=workflow,
        kind=ModelVersion.CLASSIFIER,
        version=1,
        status=ModelVersion.REJECTED,
        metrics={"n_labels": data.n_labels, "heldout": {"n": len(data.heldout_ids), "roc_auc": 0.9}},
        n_train=len(data.train_ids),
    )
    client.force_login(owner)
    html = client.get(reverse("loop:models", args=[workflow.project.slug, workflow.slug])).content.decode()
    assert "labels decided now" in html and "of them to train on" in html
    header, latest = table_rows(html, "versions")[:2]
    assert header[2:5] == ["Labels decided then", "Held out", "Trained on"]
    # Nothing was decided since the round: the headline numbers are the latest version's.
    assert by_testid(html, "labels-decided") == latest[2] == "34"
    assert by_testid(html, "labels-held-out") == latest[3] == "11"
    assert by_testid(html, "labels-trainable") == latest[4] == "23"


# --- The learning curve -----------------------------------------------------------------------------


def test_the_learning_curve_draws_a_point_per_version():
    from mlcore.plots import learning_curve_figure

    fig = learning_curve_figure({"held-out AUC": ([120], [0.91], None)}, note=loop.LEARNING_CURVE_NEEDS_TWO)
    (line,) = fig.axes[0].lines
    assert line.get_marker() not in (None, "", " ", "None")  # one point is visible without a line
    assert [t.get_text() for t in fig.axes[0].texts] == ["needs two versions to draw a line"]


def test_model_page_says_the_learning_curve_needs_two_versions(client, owner, workflow):
    def version(number, n_train):
        return ModelVersion.objects.create(
            workflow=workflow,
            kind=ModelVersion.CLASSIFIER,
            version=number,
            metrics={"heldout": {"roc_auc": 0.8}, "plots": {"learning_curve": f"plots/v{number}.png"}},
            n_train=n_train,
        )

    client.force_login(owner)
    url = reverse("loop:models", args=[workflow.project.slug, workflow.slug])
    version(1, 40)
    assert loop.learning_curve_points(workflow.pk) == [(40, 0.8)]
    assert (
        'data-testid="learning-curve-note">needs two versions to draw a line<'
        in client.get(url).content.decode()
    )
    version(2, 80)
    html = client.get(url).content.decode()
    plot = reverse("loop:plot", args=[workflow.project.slug, workflow.slug, 2, "learning_curve"])
    assert plot in html and "needs two versions" not in html


# --- Exports: the htmx answer replaces the form and the whole list -----------------------------------


def test_starting_an_export_with_htmx_answers_the_list_with_the_new_export(client, owner, workflow):
    client.force_login(owner)
    url = reverse("core:exports", args=[workflow.project.slug])
    page = client.get(url).content.decode()
    assert 'id="no-exports"' in page
    form = re.search(r"<form [^>]*hx-post[^>]*>", page).group(0)
    assert 'hx-target="#exports"' in form and 'hx-swap="outerHTML"' in form

    response = client.post(url, {"export": "votes:csv", "workflow": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    job = Job.objects.get(kind=Job.EXPORT)
    assert html.lstrip().startswith('<div id="exports">')  # what hx-target names, replaced whole
    assert f'id="export-job-{job.pk}"' in html
    assert "No exports yet." not in html and 'id="no-exports"' not in html
    assert '<option value="votes:csv" selected>' in html  # the form keeps the choice


def test_a_refused_export_with_htmx_shows_the_error_in_the_form(client, owner, workflow):
    client.force_login(owner)
    url = reverse("core:exports", args=[workflow.project.slug])
    response = client.post(url, {"export": "<b>nope</b>:csv"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="exports">') and 'data-testid="export-error"' in html
    assert "&lt;b&gt;nope&lt;/b&gt;" in html and "<b>nope</b>" not in html
    assert 'id="no-exports"' in html and not Job.objects.exists()


@pytest.mark.parametrize(
    "role, status", [("owner", 200), ("scientist", 200), ("viewer", 200), ("expert", 403), ("stranger", 404)]
)
def test_htmx_exports_are_for_exporting_roles(client, owner, workflow, member, role, status):
    client.force_login(owner if role == "owner" else member(role))
    response = client.post(
        reverse("core:exports", args=[workflow.project.slug]), {"export": "votes:csv"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == status
    assert Job.objects.filter(kind=Job.EXPORT).exists() == (status == 200)


def test_htmx_exports_send_anonymous_visitors_to_log_in(client, workflow):
    response = client.post(
        reverse("core:exports", args=[workflow.project.slug]), {"export": "votes:csv"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- The favicon --------------------------------------------------------------------------------------


def test_favicon_is_linked_from_every_page_and_answered_at_favicon_ico(client):
    icon = static("skyvote/favicon.svg")
    html = client.get(reverse("core:home_page")).content.decode()
    assert f'<link rel="icon" href="{icon}" type="image/svg+xml">' in html
    response = client.get("/favicon.ico")  # anonymous visitors too: browsers ask on every page
    assert response.status_code in (301, 302) and response["Location"] == icon
    path = finders.find("skyvote/favicon.svg")
    assert path, "static/skyvote/favicon.svg is missing"
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 32 32"


# --- The home page ---------------------------------------------------------------------------------------


def test_each_workflow_name_appears_once_on_the_home_page(client, owner, project, workflow):
    # Named like their kinds, as the demo names them.
    Workflow.objects.create(project=project, slug="rubin", name="Rubin: real or bogus?")
    Workflow.objects.create(
        project=project, slug="sim", name="Which images are similar?", kind=Workflow.SIMILARITY
    )
    names = ["Real or bogus?", "Rubin: real or bogus?", "Which images are similar?"]
    assert workflow.get_kind_display() == names[0]
    for user in (None, owner):
        if user:
            client.force_login(user)
        html = client.get(reverse("core:home_page")).content.decode()
        for name in names:
            assert html.count(name) == 1, (name, html.count(name))


# --- The field guide ---------------------------------------------------------------------------------------


def test_field_guide_images_are_asked_for_at_a_readable_sharp_size(client, project, workflow):
    from core.workflow_content import FIELD_GUIDE_IMAGE_PX

    html = client.get(reverse("labeling:field_guide", args=[project.slug])).content.decode()
    images = re.findall(r'<img src="([^"]+)" alt="[^"]*" width="(\d+)" height="(\d+)">', html)
    assert len(images) == 27  # nine built-in types, three images each
    for _url, width, height in images:
        assert int(width) == int(height) == FIELD_GUIDE_IMAGE_PX >= 128
    # What rendering provides: 252 px for 63 px stamps. The page asks for a whole number of screen
    # pixels per stamp pixel and never more pixels than the image has.
    name = images[0][0].split("/media/", 1)[-1]
    with default_storage.open(name) as handle:
        rendered = Image.open(handle).size
    assert rendered == (252, 252)
    assert FIELD_GUIDE_IMAGE_PX <= rendered[0] and FIELD_GUIDE_IMAGE_PX % 63 == 0
