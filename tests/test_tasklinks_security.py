"""Rules and security of task links: tampering, other projects' subjects, gold never in the page before the
answer, expiry, full and closed batches, rate limiting, owner-only pages."""

import re
from datetime import timedelta

import pytest
from django.core import signing
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from core.models import Project, Subject, Workflow
from labeling.models import Vote
from panels import services as tasklinks
from panels.models import Assignment, Batch
from tests.tasklinks_support import answer, landing_url, make_batch, make_subjects, start, task_form, urls_of

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def batch(workflow):
    make_subjects(workflow, n_ordinary=8, n_gold=4)
    return make_batch(workflow, tasks_per_assignment=4, gold_share=0.5, n_assignments=2)


def _tampered(token: str) -> list[str]:
    value, signature = token.rsplit(":", 1)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    other_batch = signing.Signer(salt=tasklinks.BATCH_TOKEN_SALT).sign_object({"b": 999, "c": 0})
    wrong_salt = signing.Signer(salt="something-else").sign_object({"b": 1, "c": 0})
    forged_payload = signing.Signer(salt="x").sign_object({"b": 1}).rsplit(":", 1)[0] + ":" + signature
    return [value + ":" + flipped, other_batch, wrong_salt, forged_payload, "garbage", value]


def test_tampered_batch_tokens_are_refused(client, batch):
    token = tasklinks.batch_token(batch)
    assert client.get(f"/t/{token}/?worker_id=W1").status_code == 200
    for bad in _tampered(token):
        response = client.get(f"/t/{bad}/?worker_id=W1")
        assert response.status_code == 404, bad
        assert "This task link is not valid" in response.content.decode()
        assert client.post(f"/t/{bad}/start/", {"worker_id": "W1", "consent": "yes"}).status_code == 404
    assert not Assignment.objects.exists()


def test_a_token_of_a_deleted_and_recreated_batch_id_is_refused(client, workflow, batch):
    token = tasklinks.batch_token(batch)
    batch_id = batch.pk
    batch.delete()
    Batch.objects.create(
        pk=batch_id, workflow=workflow, name="new one", created_at=timezone.now() + timedelta(seconds=5)
    )
    assert client.get(f"/t/{token}/?worker_id=W1").status_code == 404


def test_assignment_tokens_are_bound_to_their_batch(client, workflow, batch):
    other = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, name="Other")
    start(client, batch, "W1")
    start(client, other, "W2")
    mine = Assignment.objects.get(worker_id="W1")
    theirs = Assignment.objects.get(worker_id="W2")
    token = tasklinks.batch_token(batch)
    # W2's assignment token under W1's batch link, a tampered one and a forged one: all 404.
    for akey in (
        tasklinks.assignment_token(theirs),
        tasklinks.assignment_token(mine)[:-2] + "xx",
        signing.Signer(salt=tasklinks.ASSIGNMENT_TOKEN_SALT).sign_object({"a": theirs.pk, "b": batch.pk})
        + "x",
    ):
        assert client.get(reverse("panels:task", args=[token, akey])).status_code == 404
        assert client.get(reverse("panels:done", args=[token, akey])).status_code == 404
        vote = client.post(reverse("panels:vote", args=[token, akey]), {"subject": mine.subject_ids[0]})
        assert vote.status_code == 404
    assert not Vote.objects.exists()


def test_a_task_link_reaches_only_its_own_assignments_subjects(client, owner, workflow, batch):
    other_project = Project.objects.create(slug="other", name="Other", owner=owner)
    other_workflow = Workflow.objects.create(project=other_project, slug="rb", name="Other rb")
    foreign = Subject.objects.create(project=other_project, workflow=other_workflow, external_id="x1")
    start(client, batch, "W1")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    same_project_not_assigned = (
        Subject.objects.filter(workflow=workflow).exclude(pk__in=assignment.subject_ids).first()
    )
    for subject_id in (foreign.pk, same_project_not_assigned.pk, 10**9, "abc", ""):
        response = client.post(urls["vote"], {"subject": subject_id, "answer": "real", "key": ""})
        assert response.status_code == 404, subject_id
    assert not Vote.objects.exists()
    assert Subject.objects.get(pk=foreign.pk).vote_count == 0


def _normalised(html: str) -> str:
    html = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "KEY", html)
    html = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "TIME", html)
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)
    return re.sub(r'"X-CSRFToken": "[^"]+"', "CSRF", html)


def test_gold_answers_are_never_in_the_page_before_the_answer(client, workflow):
    """The task page of a gold subject is the same page whatever the experts said, and the same as for an
    ordinary subject: nothing in it depends on the gold label."""
    gold = Subject.objects.create(
        project=workflow.project,
        workflow=workflow,
        external_id="gold-1",
        random_key=0.5,
        gold_label="bogus",
        gold_subtype="satellite_streak",
        metadata={"magpsf": 19.0, "fid": 1},
    )
    make_subjects(workflow, n_ordinary=2, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=1, gold_share=1.0)
    start(client, batch, "W1")
    assignment = Assignment.objects.get()
    assert assignment.subject_ids == [gold.pk]
    urls = urls_of(assignment, batch)

    pages = []
    for label, subtype in (("bogus", "satellite_streak"), ("real", "new_point_source"), ("", "")):
        Subject.objects.filter(pk=gold.pk).update(gold_label=label, gold_subtype=subtype)
        html = client.get(urls["task"]).content.decode()
        assert task_form(html)[0] == gold.pk
        assert "satellite" not in html and "expert" not in html.lower().replace("expert-checked", "")
        pages.append(_normalised(html))
    assert pages[0] == pages[1] == pages[2]

    Subject.objects.filter(pk=gold.pk).update(gold_label="bogus", gold_subtype="satellite_streak")
    html = client.get(urls["task"]).content.decode()
    subject_id, key = task_form(html)
    # After answering, and only then, the worker learns what the experts said.
    done = answer(client, urls["vote"], subject_id, "real", key, htmx=False)
    assert done.status_code == 302
    assert Vote.objects.get().gold_correct is False


def test_expired_batch_shows_a_clear_page_and_takes_nobody_new(client, batch):
    Batch.objects.filter(pk=batch.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get(landing_url(batch, worker_id="W1"))
    assert response.status_code == 410
    assert "This study has expired" in response.content.decode()
    assert start(client, batch, "W1").status_code == 410
    assert not Assignment.objects.exists()


def test_expiry_lets_started_workers_finish_within_the_grace_period_only(client, batch):
    start(client, batch, "W1")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    Batch.objects.filter(pk=batch.pk).update(expires_at=timezone.now() - timedelta(minutes=5))
    subject_id, key = task_form(client.get(urls["task"]).content.decode())
    assert answer(client, urls["vote"], subject_id, "real", key).status_code == 200
    Batch.objects.filter(pk=batch.pk).update(
        expires_at=timezone.now() - tasklinks.EXPIRY_GRACE - timedelta(minutes=1)
    )
    late_page = client.get(urls["task"])
    assert late_page.status_code == 410 and "expired" in late_page.content.decode()
    next_id = tasklinks.progress(assignment).pending[0]
    late = answer(client, urls["vote"], next_id, "real")
    assert late.status_code == 410
    assert Vote.objects.count() == 1


def test_expiry_in_the_past_is_refused_when_creating(workflow):
    make_subjects(workflow, n_ordinary=5, n_gold=1)
    with pytest.raises(tasklinks.BatchError, match="in the past"):
        make_batch(workflow, expires_at=timezone.now() - timedelta(hours=1))
    assert not Batch.objects.exists()


def test_full_batch_shows_a_clear_page_but_lets_its_workers_resume(client, batch):
    Batch.objects.filter(pk=batch.pk).update(n_assignments=1)
    start(client, batch, "W1")
    refused = client.get(landing_url(batch, PROLIFIC_PID="W2"))
    assert refused.status_code == 410 and "This study is full" in refused.content.decode()
    assert start(client, batch, "W2").status_code == 410
    assert Assignment.objects.count() == 1
    resumed = client.get(landing_url(batch, PROLIFIC_PID="W1"))
    assert resumed.status_code == 302


def test_closed_batch_stops_everyone_but_still_shows_finished_workers_their_code(client, workflow, batch):
    start(client, batch, "W1")
    done_assignment = Assignment.objects.get()
    urls = urls_of(done_assignment, batch)
    from tests.tasklinks_support import work_through

    work_through(client, urls["task"], urls["vote"])
    start(client, batch, "W2")
    open_assignment = Assignment.objects.get(worker_id="W2")
    tasklinks.set_batch_status(batch, Batch.CLOSED)

    closed = client.get(landing_url(batch, worker_id="W3"))
    assert closed.status_code == 410 and "closed" in closed.content.decode()
    assert client.get(urls_of(open_assignment, batch)["task"]).status_code == 410
    done_assignment.refresh_from_db()
    assert tasklinks.completion_code(done_assignment) in client.get(urls["done"]).content.decode()


def test_worker_ids_with_odd_characters_get_a_clear_error(client, batch):
    for bad in ("=HYPERLINK(1)", "a b", "-1", "x" * 201):
        response = client.get(landing_url(batch, worker_id=bad.replace(" ", "%20")))
        assert response.status_code == 400, bad
        assert "characters we do not accept" in response.content.decode()
    assert not Assignment.objects.exists()


def test_answers_faster_than_the_rate_limit_get_a_429_and_lose_nothing(client, settings, batch):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (2, 60)
    start(client, batch, "W1")  # one request of the start bucket (a separate scope)
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    for _ in range(2):
        subject_id, key = task_form(client.get(urls["task"]).content.decode())
        assert answer(client, urls["vote"], subject_id, "real", key).status_code == 200
    subject_id, key = task_form(client.get(urls["task"]).content.decode())
    limited = answer(client, urls["vote"], subject_id, "bogus", key)
    html = limited.content.decode()
    assert limited.status_code == 429
    assert "faster than we can accept" in html
    assert task_form(html)[0] == subject_id  # the same task, ready to answer again
    assert Vote.objects.count() == 2
    plain = answer(client, urls["vote"], subject_id, "bogus", key, htmx=False)
    assert plain.status_code == 429 and "faster than we can accept" in plain.content.decode()

    cache.clear()  # the window passes
    assert answer(client, urls["vote"], subject_id, "bogus", key).status_code == 200
    assert Vote.objects.count() == 3


def test_rate_limit_is_per_worker(client, settings, batch):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1, 60)
    assert start(client, batch, "W1").status_code == 302
    assert start(client, batch, "W1").status_code == 429
    assert start(client, batch, "W2").status_code == 302


def test_batch_pages_are_for_the_projects_owner_only(client, django_user_model, owner, workflow, batch):
    stranger = django_user_model.objects.create_user("stranger", password="pw-123456789")
    slug = workflow.project.slug
    urls = [
        reverse("panels:batches", args=[slug]),
        reverse("panels:batch_new", args=[slug]),
        reverse("panels:batch", args=[slug, batch.pk]),
        reverse("panels:batch_csv", args=[slug, batch.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 302  # to the login page
    client.force_login(stranger)
    for url in urls:
        assert client.get(url).status_code == 404
    assert (
        client.post(reverse("panels:batch_status", args=[slug, batch.pk]), {"status": "closed"}).status_code
        == 404
    )
    batch.refresh_from_db()
    assert batch.status == Batch.OPEN
    client.force_login(owner)
    for url in urls:
        assert client.get(url).status_code == 200
    # A batch of this project under another project's slug: 404.
    other = Project.objects.create(slug="mine-too", name="Mine too", owner=owner)
    assert client.get(reverse("panels:batch", args=[other.slug, batch.pk])).status_code == 404
