"""Owner side of task links: batch form and its errors, assignment composition, worker quality and
suggestions, approve/reject, payment CSV, completion codes and return URLs."""

import csv
import io
import random
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from core.models import Subject, Workflow
from labeling.models import Vote
from panels import services as tasklinks
from panels.models import Assignment, Batch
from tests.tasklinks_support import make_batch, make_subjects

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    cache.clear()
    yield
    cache.clear()


def _form(workflow, **overrides):
    data = {
        "workflow": workflow.pk,
        "name": "Pilot",
        "tasks_per_assignment": 5,
        "n_assignments": 3,
        "gold_percent": 20,
        "expires_at": (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "instructions": "",
        "payment_note": "",
        "return_url_template": "",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"expires_at": "2020-01-01T10:00"}, "The expiry date is in the past"),
        ({"tasks_per_assignment": 50}, "This workflow has only 12 subjects"),
        ({"gold_percent": 150}, "less than or equal to 100"),
        ({"return_url_template": "javascript:alert(1)"}, "The return URL must start with https://"),
        ({"tasks_per_assignment": 0}, "greater than or equal to 1"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_batch_form_errors_are_clear_and_create_nothing(client, owner, workflow, overrides, message):
    make_subjects(workflow, n_ordinary=10, n_gold=2)
    client.force_login(owner)
    data = _form(workflow, **overrides)
    response = client.post(reverse("panels:batch_new", args=[workflow.project.slug]), data)
    html = response.content.decode()
    assert response.status_code == 400
    assert message in html
    assert not Batch.objects.exists()
    if overrides.get("name", "x"):
        assert 'value="Pilot"' in html  # what was typed is kept


def test_gold_share_without_gold_subjects_is_explained(client, owner, workflow):
    make_subjects(workflow, n_ordinary=10, n_gold=0)
    client.force_login(owner)
    response = client.post(reverse("panels:batch_new", args=[workflow.project.slug]), _form(workflow))
    assert response.status_code == 400
    assert "no gold subjects yet" in response.content.decode()
    response = client.post(
        reverse("panels:batch_new", args=[workflow.project.slug]), _form(workflow, gold_percent=0)
    )
    assert response.status_code == 302 and Batch.objects.get().gold_share == 0.0


def test_both_kinds_of_workflow_are_offered_and_a_small_similarity_one_is_refused(
    client, owner, project, workflow
):
    sim = Workflow.objects.create(project=project, slug="similar", name="Similar?", kind=Workflow.SIMILARITY)
    make_subjects(workflow, n_ordinary=6, n_gold=0)
    client.force_login(owner)
    page = client.get(reverse("panels:batch_new", args=[project.slug])).content.decode()
    assert f'<option value="{workflow.pk}"' in page and f'<option value="{sim.pk}"' in page
    # Similarity batches: tests/test_tasklinks_similarity.py. One without subjects says what it needs.
    with pytest.raises(tasklinks.BatchError, match="a similarity task needs 16"):
        make_batch(sim, gold_share=0.0)


def test_assignments_mix_gold_and_ordinary_subjects_and_spread_workers_over_the_pool(workflow):
    ordinary, gold = make_subjects(workflow, n_ordinary=40, n_gold=8)
    retired = Subject.objects.create(
        project=workflow.project,
        workflow=workflow,
        external_id="retired",
        status=Subject.RETIRED,
        random_key=0.3,
    )
    batch = make_batch(workflow, tasks_per_assignment=10, gold_share=0.3, n_assignments=5)
    a1, _ = tasklinks.start_assignment(batch, "W1", rng=random.Random(1))
    a2, _ = tasklinks.start_assignment(batch, "W2", rng=random.Random(1))
    gold_ids = {s.pk for s in gold}
    obvious_ids = {s.pk for s in gold if tasklinks.is_attention_check(s)}
    for a in (a1, a2):
        ids = a.subject_ids
        assert len(ids) == 10 and len(set(ids)) == 10
        assert len(set(ids) & gold_ids) == 3
        assert set(ids) & obvious_ids  # at least one attention check
        assert retired.pk not in ids
        assert Subject.objects.filter(pk__in=ids, workflow=workflow).count() == 10
    ordinary_1 = set(a1.subject_ids) - gold_ids
    ordinary_2 = set(a2.subject_ids) - gold_ids
    assert not ordinary_1 & ordinary_2  # the second worker gets other subjects while the first is working


def test_with_an_active_model_assignments_follow_the_ranking(workflow):
    from core.models import ModelVersion

    ordinary, _ = make_subjects(workflow, n_ordinary=30, n_gold=0)
    for rank, subject in enumerate(ordinary):
        Subject.objects.filter(pk=subject.pk).update(priority=float(rank))
    workflow.active_model = ModelVersion.objects.create(
        workflow=workflow, version=1, status=ModelVersion.ACTIVE
    )
    workflow.exploration_share = 0.0
    workflow.save(update_fields=["active_model", "exploration_share"])
    batch = make_batch(workflow, tasks_per_assignment=5, gold_share=0.0)
    assignment, _ = tasklinks.start_assignment(batch, "W1", rng=random.Random(0))
    assert set(assignment.subject_ids) == {s.pk for s in ordinary[-5:]}


def _finish(batch, worker_id, choose, gap_seconds):
    """Answer a whole assignment through the service, with answers `gap_seconds` apart on the server clock."""
    assignment, _ = tasklinks.start_assignment(batch, worker_id)
    for subject_id in list(assignment.subject_ids):
        subject = Subject.objects.get(pk=subject_id)
        tasklinks.submit_answer(
            assignment,
            subject_id=subject_id,
            answer=choose(subject),
            idempotency_key=f"{random.getrandbits(128):032x}",
        )
    base = timezone.now() - timedelta(hours=1)
    for i, vote in enumerate(Vote.objects.filter(assignment=assignment).order_by("pk")):
        Vote.objects.filter(pk=vote.pk).update(created_at=base + timedelta(seconds=i * gap_seconds))
    assignment.refresh_from_db()
    return assignment


def _quality_of(batch, assignment):
    return next(q for q in tasklinks.batch_quality(batch) if q.assignment.pk == assignment.pk)


def test_quality_and_suggestions(workflow):
    make_subjects(workflow, n_ordinary=40, n_gold=16)
    batch = make_batch(workflow, tasks_per_assignment=12, gold_share=0.5, n_assignments=5)

    def right(s):
        return s.gold_label or "real"

    def wrong_on_gold(s):
        return {"real": "bogus", "bogus": "real"}.get(s.gold_label, "real")

    careful = _finish(batch, "careful", right, gap_seconds=4)
    q = _quality_of(batch, careful)
    assert (q.n_gold, q.n_gold_correct, q.gold_accuracy) == (6, 6, 1.0)
    assert q.n_attention >= 1 and q.n_attention_passed == q.n_attention
    assert q.median_seconds == pytest.approx(4.0) and not q.too_fast
    assert q.suggestion == "approve" and q.status == "complete"

    careless = _finish(batch, "careless", wrong_on_gold, gap_seconds=4)
    q = _quality_of(batch, careless)
    assert q.gold_accuracy == 0.0 and q.suggestion == "reject"
    assert any("attention checks" in r for r in q.reasons)

    hasty = _finish(batch, "hasty", right, gap_seconds=0.4)
    q = _quality_of(batch, hasty)
    assert q.too_fast and q.median_seconds == pytest.approx(0.4)
    assert q.suggestion == "review" and any("too fast" in r for r in q.reasons)

    waiting, _ = tasklinks.start_assignment(batch, "waiting")
    assert _quality_of(batch, waiting).suggestion == "wait"


def test_owner_approves_and_rejects_and_the_csv_says_so(client, owner, workflow):
    make_subjects(workflow, n_ordinary=20, n_gold=4)
    batch = make_batch(workflow, tasks_per_assignment=4, gold_share=0.25, n_assignments=3)
    done = _finish(batch, "W1", lambda s: s.gold_label or "real", gap_seconds=3)
    in_progress, _ = tasklinks.start_assignment(batch, "W2")
    client.force_login(owner)
    slug = workflow.project.slug

    page = client.get(reverse("panels:batch", args=[slug, batch.pk])).content.decode()
    assert "W1" in page and "W2" in page and "approve" in page and "wait" in page
    review_url = reverse("panels:batch_review", args=[slug, batch.pk, done.pk])
    row = client.post(review_url, {"decision": "approved"}, HTTP_HX_REQUEST="true")
    assert row.status_code == 200 and f'id="assignment-{done.pk}"' in row.content.decode()
    assert "<strong>approved</strong>" in row.content.decode()
    assert client.post(review_url, {"decision": "paid twice"}).status_code == 400
    client.post(
        reverse("panels:batch_review", args=[slug, batch.pk, in_progress.pk]),
        {"decision": "rejected"},
    )

    response = client.get(reverse("panels:batch_csv", args=[slug, batch.pk]))
    rows = {r["worker_id"]: r for r in csv.DictReader(io.StringIO(response.content.decode()))}
    assert list(next(csv.reader(io.StringIO(response.content.decode())))) == tasklinks.PAYMENT_COLUMNS
    assert rows["W1"]["status"] == "complete" and rows["W1"]["review"] == "approved"
    assert rows["W1"]["completion_code"] == tasklinks.completion_code(done)
    assert rows["W1"]["tasks_done"] == "4" and rows["W1"]["gold_accuracy"] == "1.000"
    assert rows["W2"]["status"] == "in progress" and rows["W2"]["completion_code"] == ""
    assert rows["W2"]["review"] == "rejected" and rows["W2"]["tasks_done"] == "0"


def test_completion_codes_differ_per_assignment_and_depend_on_the_secret_key(settings, workflow):
    make_subjects(workflow, n_ordinary=10, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0)
    a1, _ = tasklinks.start_assignment(batch, "W1")
    a2, _ = tasklinks.start_assignment(batch, "W2")
    code1 = tasklinks.completion_code(a1)
    assert len(code1) == 10 and code1 != tasklinks.completion_code(a2)
    settings.SECRET_KEY = "another secret key for this test only, long enough"
    assert tasklinks.completion_code(a1) != code1


def test_return_url_fills_placeholders_url_encoded(workflow):
    make_subjects(workflow, n_ordinary=4, n_gold=0)
    batch = make_batch(
        workflow,
        tasks_per_assignment=1,
        gold_share=0.0,
        return_url_template="https://panel.example.org/end?c={code}&w={worker_id}&s={study_id}&x={session_id}",
    )
    assignment, _ = tasklinks.start_assignment(batch, "a+b@c", study_id="S1", session_id="X:9")
    url = tasklinks.return_url(assignment, "CODE123")
    assert url == "https://panel.example.org/end?c=CODE123&w=a%2Bb%40c&s=S1&x=X%3A9"


def test_a_worker_is_one_participant_within_a_project(workflow):
    make_subjects(workflow, n_ordinary=12, n_gold=4)
    first = make_batch(workflow, tasks_per_assignment=4, gold_share=0.5, name="one")
    second = make_batch(workflow, tasks_per_assignment=4, gold_share=0.5, name="two")
    a1, _ = tasklinks.start_assignment(first, "W1")
    a2, _ = tasklinks.start_assignment(second, "W1")
    assert a1.participant_id == a2.participant_id
    assert not set(a1.subject_ids) & set(a2.subject_ids)  # never the same subject twice to one worker
    assert Assignment.objects.count() == 2
