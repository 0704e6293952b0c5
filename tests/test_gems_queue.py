"""Rare gems, the gem queue: anomaly runs (after a round, and failing without losing the previous
scores), the selector's gem share, the Gems page and its ratings (permissions, validation, and the
ranking learning from them), the API and the "gems" export.

Small synthetic pools (make_pool) and tiny training settings; jobs run eagerly as everywhere.
"""

import csv
import random
import shutil
import uuid
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core import gems as core_gems
from core.exporters import exporter
from core.models import Participant, Project, ProjectMembership, Subject, Workflow
from gems import services
from gems.models import AnomalyRun, AnomalyScore, GemRating
from jobs.models import Job
from labeling.selection import TOP_FEW, gem_slot_due, next_subject
from loop import services as loop
from tests.loop_support import make_pool, tiny_loop_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def loop_settings(settings, tmp_path):
    cache.clear()
    settings.SKYVOTE_GEMS = {"after_rounds": True, "seed": 0, "chunk": 32}
    return tiny_loop_settings(settings, tmp_path)


def anomaly_run(workflow, capture) -> Job:
    with capture(execute=True):
        job, created = services.request_anomaly(workflow)
    assert created
    job.refresh_from_db()
    return job


@pytest.fixture
def pool(project, workflow, loop_settings):
    return make_pool(project, workflow, n=60, n_labeled=20, n_gold=6, seed=3)


@pytest.fixture
def scored(workflow, pool, django_capture_on_commit_callbacks):
    job = anomaly_run(workflow, django_capture_on_commit_callbacks)
    assert job.status == Job.SUCCEEDED, job.error
    return pool


def volunteer(n: int) -> Participant:
    return Participant.objects.create(kind=Participant.ANONYMOUS, session_key=f"gem-volunteer-{n}")


def flag(workflow, subject_id, participant, note=""):
    return core_gems.record_flag(
        workflow_id=workflow.pk,
        subject_id=subject_id,
        participant=participant,
        vote_key=uuid.uuid4(),
        note=note,
    )


@pytest.fixture
def member(django_user_model, project):
    def make(role):
        user = django_user_model.objects.create_user(f"{role}-user")  # no password: force_login, fast
        if role == "other owner":
            Project.objects.create(slug="elsewhere", name="Another project", owner=user)
        elif role != "stranger":
            ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


def page_url(workflow, **query):
    url = reverse("gems:gems", args=[workflow.project.slug, workflow.slug])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def rate_url(workflow, subject_id):
    return reverse("gems:rate", args=[workflow.project.slug, workflow.slug, subject_id])


# ---------------------------------------------------------------------------------------------
# Anomaly runs


@pytest.mark.slow
def test_a_successful_round_queues_an_anomaly_run_that_scores_every_subject(
    project, workflow, loop_settings, django_capture_on_commit_callbacks
):
    make_pool(project, workflow, n=60, n_labeled=24, n_gold=8, seed=1)
    with django_capture_on_commit_callbacks(execute=True):
        round_job, _ = loop.request_training(workflow)
    round_job.refresh_from_db()
    assert round_job.status == Job.SUCCEEDED, round_job.error
    workflow.refresh_from_db()

    job = Job.objects.get(workflow=workflow, kind=services.ANOMALY)
    assert job.status == Job.SUCCEEDED, job.error
    run = services.latest_run(workflow)
    assert run.status == AnomalyRun.SUCCEEDED and run.job == job
    assert run.model_version == workflow.active_model
    assert set(run.features) == {"classifier", "cutout statistics"}
    # Every subject, retired or not, has a score by every method, in [0, 1].
    every = set(Subject.objects.filter(workflow=workflow).values_list("pk", flat=True))
    assert Subject.objects.filter(workflow=workflow, status=Subject.RETIRED).exists()
    scores = AnomalyScore.objects.filter(run=run)
    assert set(scores.values_list("subject_id", flat=True)) == every and run.n_subjects == len(every)
    for row in scores.values("iforest", "knn", "urf", "combined", "gem_rank"):
        assert all(0.0 <= row[m] <= 1.0 for m in ("iforest", "knn", "urf", "combined"))
        assert 1 <= row["gem_rank"] <= len(every)


@pytest.mark.slow
def test_an_embedding_round_queues_an_anomaly_run_over_the_embedding(
    project, loop_settings, django_capture_on_commit_callbacks
):
    from similarity.services import request_embedding_round
    from tests.similarity_support import TINY_TRAINING, similarity_workflow

    workflow = similarity_workflow(project, n_subjects=20)
    with django_capture_on_commit_callbacks(execute=True):
        round_job, _ = request_embedding_round(
            workflow,
            reason="initial",
            train_settings={**TINY_TRAINING, "pretrain_epochs": 1, "finetune_epochs": 1},
        )
    round_job.refresh_from_db()
    assert round_job.status == Job.SUCCEEDED, round_job.error

    job = Job.objects.get(workflow=workflow, kind=services.ANOMALY)
    assert job.status == Job.SUCCEEDED, job.error
    run = services.latest_run(workflow)
    assert run.features == {"embedding": 32} and run.model_version is None
    assert AnomalyScore.objects.filter(run=run).count() == workflow.subjects.count() == 20


def test_a_failing_anomaly_run_keeps_the_previous_scores(
    workflow, scored, settings, django_capture_on_commit_callbacks
):
    first = services.latest_run(workflow)
    before = dict(AnomalyScore.objects.filter(run=first).values_list("subject_id", "combined"))
    # The cutouts are lost (array cache and stored arrays): the next run has nothing to score.
    shutil.rmtree(settings.SKYVOTE_LOOP["cache_dir"])
    shutil.rmtree(Path(settings.MEDIA_ROOT), ignore_errors=True)
    shutil.rmtree(Path(settings.PRIVATE_ROOT) / "subjects", ignore_errors=True)

    job = anomaly_run(workflow, django_capture_on_commit_callbacks)

    assert job.status == Job.FAILED and "No features" in job.error
    # (A worker runs in autocommit and keeps the failed run's row; here the job's savepoint undoes it.)
    assert (
        not AnomalyRun.objects.filter(workflow=workflow, status=AnomalyRun.SUCCEEDED)
        .exclude(pk=first.pk)
        .exists()
    )
    assert services.latest_run(workflow) == first
    assert dict(AnomalyScore.objects.filter(run=first).values_list("subject_id", "combined")) == before
    table = services.gem_table(workflow)
    assert table.run == first and len(table.ids) == len(before)


# ---------------------------------------------------------------------------------------------
# Routing: the gem share of the volunteer queue


def eligible_top(workflow) -> list[int]:
    run = services.latest_run(workflow)
    return list(
        AnomalyScore.objects.filter(
            run=run,
            gem_rank__lte=services.GEM_SOURCE_TOP,
            subject__status=Subject.ACTIVE,
            subject__gold_label="",
            subject__vote_count__lt=workflow.retirement_limit,
        )
        .order_by("gem_rank")
        .values_list("subject_id", flat=True)
    )


def test_gem_share_one_serves_top_candidates_and_zero_never(workflow, scored):
    top = eligible_top(workflow)
    assert len(top) > 2 * TOP_FEW
    # No gold mixed in: every pick is a gem slot or a random one.
    Workflow.objects.filter(pk=workflow.pk).update(
        gem_share=1.0, exploration_share=1.0, gold_schedule=[[None, 0]]
    )
    workflow.refresh_from_db()
    picks = {next_subject(workflow, volunteer(i), rng=random.Random(i)).pk for i in range(25)}
    assert picks <= set(top[:TOP_FEW])

    Workflow.objects.filter(pk=workflow.pk).update(gem_share=0.0)
    workflow.refresh_from_db()
    picks = {next_subject(workflow, volunteer(100 + i), rng=random.Random(i)).pk for i in range(25)}
    assert picks - set(top[:TOP_FEW])  # random picks: the gem slot never narrows them


def test_gem_slots_follow_the_share_on_a_schedule():
    assert sum(gem_slot_due(0.05, n) for n in range(100)) == 5
    assert sum(gem_slot_due(0.3, n) for n in range(100)) == 30
    assert all(gem_slot_due(1.0, n) for n in range(50)) and not any(gem_slot_due(0.0, n) for n in range(50))


def test_a_gem_slot_costs_at_most_one_extra_query(workflow, scored):
    participant = volunteer(1)
    Workflow.objects.filter(pk=workflow.pk).update(
        gem_share=0.0, exploration_share=1.0, gold_schedule=[[None, 0]]
    )
    workflow.refresh_from_db()
    with CaptureQueriesContext(connection) as plain:
        next_subject(workflow, participant, rng=random.Random(5), n_seen=0, open_skips=0)
    Workflow.objects.filter(pk=workflow.pk).update(gem_share=1.0)
    workflow.refresh_from_db()
    with CaptureQueriesContext(connection) as gem:
        next_subject(workflow, participant, rng=random.Random(5), n_seen=0, open_skips=0)
    assert len(gem) <= len(plain) + 1


def test_gem_share_is_validated_in_the_workflow_editor(client, owner, workflow):
    from core.forms_workflows import WorkflowSettingsForm

    form = WorkflowSettingsForm(
        data={**{f: getattr(workflow, f) for f in WorkflowSettingsForm.Meta.fields}, "gem_share": 0.8},
        instance=workflow,
    )
    assert not form.is_valid() and "gem_share" in form.errors


# ---------------------------------------------------------------------------------------------
# The Gems page


PAGE_ACCESS = [
    ("owner", 200),
    ("scientist", 200),
    ("expert", 200),
    ("viewer", 200),
    ("other owner", 404),
    ("stranger", 404),
]


def test_page_permissions(client, owner, member, workflow, scored):
    for role, status in PAGE_ACCESS:
        client.force_login(owner if role == "owner" else member(role))
        response = client.get(page_url(workflow))
        assert response.status_code == status, role
        if status == 200:
            assert response.content.count(b'data-testid="gem-row"') == services.PAGE_SIZE
            run = services.latest_run(workflow)
            assert (
                f"Anomaly scores of {run.n_subjects} subjects, {run.finished_at:%Y-%m-%d}"
                in response.content.decode()
            )
            can_rate = role in ("owner", "scientist", "expert")
            assert (b'class="gem-rate"' in response.content) == can_rate, role


def test_anonymous_is_sent_to_log_in(client, workflow):
    response = client.get(page_url(workflow))
    assert response.status_code == 302 and "login" in response["Location"]
    response = client.post(rate_url(workflow, 1), {"rating": "3"})
    assert response.status_code == 302 and "login" in response["Location"]


def test_page_shows_flags_notes_escaped_and_reasons(client, owner, workflow, scored):
    subject_id = scored.unlabeled[0]
    for n, note in enumerate(["<script>alert(1)</script> odd ring", "second look"]):
        flag(workflow, subject_id, volunteer(n), note)
    client.force_login(owner)
    content = b""
    for number in range(1, 4):
        content += client.get(page_url(workflow, page=number)).content
    text = content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; odd ring" in text and "<script>alert(1)" not in text
    assert "second look" in text and "2 flags" in text
    assert "weird by " in text


def test_page_without_a_run_says_so(client, owner, workflow):
    client.force_login(owner)
    response = client.get(page_url(workflow, page="x", show="nonsense"))
    assert response.status_code == 200 and b'data-testid="gem-no-run"' in response.content


# ---------------------------------------------------------------------------------------------
# Ratings


RATE_ACCESS = [
    ("owner", 200),
    ("scientist", 200),
    ("expert", 200),
    ("viewer", 403),
    ("other owner", 404),
    ("stranger", 404),
]


def test_rating_permissions(client, owner, member, workflow, scored):
    subject_id = scored.unlabeled[0]
    for role, status in RATE_ACCESS:
        user = owner if role == "owner" else member(role)
        client.force_login(user)
        response = client.post(rate_url(workflow, subject_id), {"rating": "4"}, HTTP_HX_REQUEST="true")
        assert response.status_code == status, role
        stored = GemRating.objects.filter(subject_id=subject_id, rated_by=user).first()
        if status == 200:
            assert b"You rated it 4" in response.content
            assert stored.rating == 4 and stored.workflow == workflow and stored.created_at
        else:
            assert stored is None, role


def test_bad_ratings_are_400_with_a_message_and_other_workflows_404(client, owner, project, workflow, scored):
    client.force_login(owner)
    for value in ["6", "-1", "x", "2.5", "", "²", "1" * 40]:
        response = client.post(
            rate_url(workflow, scored.unlabeled[0]), {"rating": value}, HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 400 and b"0 to 5" in response.content, value
    other = Workflow.objects.create(project=project, slug="other", name="Other")
    response = client.post(rate_url(other, scored.unlabeled[0]), {"rating": "3"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 404
    assert not GemRating.objects.exists()

    # Without htmx (no JavaScript) a rating sends the rater back to the page.
    subject_id = scored.unlabeled[0]
    response = client.post(rate_url(workflow, subject_id), {"rating": "i"})
    assert response.status_code == 302 and response["Location"] == page_url(workflow)
    client.post(rate_url(workflow, subject_id), {"rating": "i"}, HTTP_HX_REQUEST="true")
    assert GemRating.objects.get().rating == 5
    client.post(rate_url(workflow, subject_id), {"rating": "n"}, HTTP_HX_REQUEST="true")
    rating = GemRating.objects.get()
    assert rating.rating == 0 and rating.updated_at >= rating.created_at


def page_ids(client, workflow, **query) -> list[int]:
    import re

    content = client.get(page_url(workflow, **query)).content.decode()
    return [int(i) for i in re.findall(r'data-gem-row data-subject="(\d+)"', content)]


def test_rating_a_page_changes_the_order_of_the_next(client, owner, workflow, scored):
    client.force_login(owner)
    first, second = page_ids(client, workflow), page_ids(client, workflow, page=2)
    assert len(first) == len(second) == services.PAGE_SIZE and not set(first) & set(second)
    # Ratings that follow one feature direction, so that the regressor has something to learn.
    table = services.gem_table(workflow)
    row_of = {int(s): r for r, s in enumerate(table.ids)}
    features = services.run_features(table.run)
    axis = features[[row_of[s] for s in first], 0]
    median = sorted(axis)[len(axis) // 2]
    for subject_id, value in zip(first, axis, strict=True):
        client.post(
            rate_url(workflow, subject_id),
            {"rating": "5" if value >= median else "0"},
            HTTP_HX_REQUEST="true",
        )
    assert GemRating.objects.count() == services.PAGE_SIZE

    after = page_ids(client, workflow)
    assert not set(after) & set(first)  # rated rows left the list to review
    assert after[: len(second)] != second  # …and what is left is ordered by what the ratings taught
    assert sorted(page_ids(client, workflow, show="rated")) == sorted(first)

    # Deterministic: the same ratings give the same order.
    assert page_ids(client, workflow) == after


# ---------------------------------------------------------------------------------------------
# API


def api_url(project, name="api_gems"):
    return reverse(name, args=[project.slug])


API_ACCESS = [("owner", 200), ("scientist", 200), ("viewer", 200), ("expert", 404), ("other owner", 404)]


def test_api_candidates_permissions_and_bad_input(client, owner, member, project, workflow, scored):
    assert client.get(api_url(project), {"workflow": workflow.slug}).status_code in (401, 403)
    for role, status in API_ACCESS:
        client.force_login(owner if role == "owner" else member(role))
        response = client.get(api_url(project), {"workflow": workflow.slug})
        assert response.status_code == status, role
        if status == 200:
            body = response.json()
            assert body["count"] == len(scored.subjects) and len(body["results"]) == services.PAGE_SIZE
            row = body["results"][0]
            assert row["rank"] == 1 and set(row) >= {
                "subject", "external_id", "gem_score", "weirdness", "iforest", "knn", "urf",
                "disagreement", "reasons", "n_flags", "notes", "ratings",
            }  # fmt: skip
    client.force_login(owner)
    assert client.get(api_url(project)).status_code == 400
    assert client.get(api_url(project), {"workflow": "nope"}).status_code == 400
    assert client.get(api_url(project), {"workflow": workflow.slug, "show": "x"}).status_code == 400
    assert client.get(api_url(project), {"workflow": workflow.slug, "page": "99"}).status_code == 404


def test_api_ratings(client, owner, member, project, workflow, scored):
    subject_id = scored.unlabeled[1]
    flag(workflow, subject_id, volunteer(1), "a ring")
    client.force_login(owner)
    url = api_url(project, "api_gem_ratings")
    body = {"workflow": workflow.slug, "subject": subject_id, "rating": 4}
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 201 and response.json()["rating"] == 4
    assert response.json()["rated_by"].startswith("v-")
    response = client.post(url, {**body, "rating": 2}, content_type="application/json")
    assert response.status_code == 200 and GemRating.objects.get().rating == 2
    for bad in (6, -1, "x", 2.5, None, True):
        response = client.post(url, {**body, "rating": bad}, content_type="application/json")
        assert response.status_code == 400 and "0 to 5" in str(response.json()), bad
    assert client.post(url, {**body, "subject": 10**9}, content_type="application/json").status_code == 404
    assert client.post(url, "[1, 2]", content_type="application/json").status_code == 400
    assert client.post(url, "{not json", content_type="application/json").status_code == 400

    rated = client.get(api_url(project), {"workflow": workflow.slug, "show": "rated"}).json()["results"]
    assert [r["subject"] for r in rated] == [subject_id]
    assert (
        rated[0]["notes"] == ["a ring"] and rated[0]["n_flags"] == 1 and rated[0]["ratings"][0]["rating"] == 2
    )

    client.force_login(member("viewer"))
    assert client.post(url, body, content_type="application/json").status_code == 403
    client.force_login(member("scientist"))
    assert client.post(url, body, content_type="application/json").status_code == 201
    for role in ("expert", "other owner"):  # the API knows no experts
        client.force_login(member(role))
        assert client.post(url, body, content_type="application/json").status_code == 404, role
    client.logout()
    assert client.post(url, body, content_type="application/json").status_code in (401, 403)
    assert GemRating.objects.count() == 2


def test_api_schema_documents_the_gem_endpoints(client):
    schema = client.get(reverse("api_schema"), HTTP_ACCEPT="application/json").content.decode()
    assert "/api/projects/{project}/gems/" in schema and "/api/projects/{project}/gems/ratings/" in schema


# ---------------------------------------------------------------------------------------------
# Export


def test_gems_export_columns_and_formula_safe_notes(owner, project, workflow, scored, tmp_path):
    subject_id = scored.unlabeled[2]
    flag(workflow, subject_id, volunteer(1), "=HYPERLINK(1) weird")
    GemRating.objects.create(workflow=workflow, subject_id=subject_id, rated_by=owner, rating=5)
    found = exporter("gems")
    assert found is not None and "csv" in found.formats and "parquet" in found.formats
    target = tmp_path / "gems.csv"
    info = found.run(project, target, "csv", workflow=None, params={})
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert info["rows"] == len(rows) == len(scored.subjects)
    assert list(rows[0]) == [c.name for c in __import__("gems.exporters").exporters.COLUMNS]
    assert rows[0]["rank"] == "1"
    row = next(r for r in rows if r["subject_id"] == str(subject_id))
    assert row["notes"] == "'=HYPERLINK(1) weird" and row["n_flags"] == "1"
    assert row["n_ratings"] == "1" and row["ratings"].startswith("5 by v-") and " at 20" in row["ratings"]
    assert all(row[m] for m in ("iforest", "knn", "urf", "weirdness", "gem_score"))

    import pyarrow.parquet as pq

    found.run(project, tmp_path / "gems.parquet", "parquet", workflow=workflow, params={})
    table = pq.read_table(tmp_path / "gems.parquet")
    assert table.num_rows == len(scored.subjects) and "gem_score" in table.column_names


def send_url(workflow):
    return reverse("gems:send", args=[workflow.project.slug, workflow.slug])


def test_the_top_candidates_go_to_a_follow_up_workflow_with_their_ratings(
    client, owner, member, project, workflow, scored, django_capture_on_commit_callbacks
):
    follow_up = Workflow.objects.create(project=project, slug="typing", name="What kind?")
    client.force_login(owner)
    top = page_ids(client, workflow)[:5]
    assert client.post(rate_url(workflow, top[0]), {"rating": "5"}).status_code == 302
    # Who may send: owners and scientists; experts and viewers 403, strangers 404.
    for role, status in [("expert", 403), ("viewer", 403), ("other owner", 404)]:
        other = client.__class__()
        other.force_login(member(role))
        assert other.post(send_url(workflow), {"target": follow_up.pk, "n": 5}).status_code == status
    # Bad input is a message on the page, never a copy.
    other_project = Project.objects.create(slug="other", name="Other", owner=owner)
    foreign = Workflow.objects.create(project=other_project, slug="x", name="Elsewhere")
    for data in (
        {"target": follow_up.pk, "n": 0},
        {"target": foreign.pk, "n": 5},
        {"target": workflow.pk, "n": 5},
    ):
        response = client.post(send_url(workflow), data, follow=True)
        assert response.status_code == 200 and Job.objects.filter(kind=services.SEND).count() == 0
    assert (
        "Send between 1 and"
        in client.post(send_url(workflow), {"target": follow_up.pk, "n": "x"}, follow=True).content.decode()
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(send_url(workflow), {"target": follow_up.pk, "n": 5})
    assert response.status_code == 302
    job = Job.objects.get(kind=services.SEND)
    assert job.status == Job.SUCCEEDED, job.error
    copies = Subject.objects.filter(workflow=follow_up).order_by("pk")
    assert [c.metadata["sent_from"]["subject"] for c in copies] == top
    first = copies[0]
    assert first.metadata["sent_from"]["gem_ratings"] == [5] and first.metadata["sent_from"]["gem_rank"] == 1
    assert (
        first.subject_set.name.startswith("Gem candidates from") and first.images and first.status == "active"
    )
    source = Subject.objects.get(pk=top[0])
    assert first.external_id == source.external_id and Subject.objects.filter(workflow=workflow).count() == 60
