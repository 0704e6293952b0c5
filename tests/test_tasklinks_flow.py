"""The annotator's whole flow through the test client: owner creates a batch → link → consent → N tasks →
completion code → payment CSV. Plus resume, double take, preview and the code only after the last task."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from core.models import Participant, Subject
from labeling.models import ParticipantSkill, Vote
from panels import services as tasklinks
from panels.models import Assignment, Batch
from tests.tasklinks_support import (
    answer,
    landing_url,
    make_batch,
    make_subjects,
    right_answer,
    start,
    task_form,
    urls_of,
    work_through,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    cache.clear()
    yield
    cache.clear()


def test_owner_creates_batch_and_worker_completes_it_through_the_generic_link(client, owner, workflow):
    ordinary, gold = make_subjects(workflow, n_ordinary=10, n_gold=4)
    client.force_login(owner)
    expires = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(
        reverse("panels:batch_new", args=[workflow.project.slug]),
        {
            "workflow": workflow.pk,
            "name": "Pilot",
            "tasks_per_assignment": 5,
            "n_assignments": 2,
            "gold_percent": 40,
            "expires_at": expires,
            "instructions": "Look at the difference image first.",
            "payment_note": "£1 for 5 minutes",
            "return_url_template": "https://panel.example.org/done?code={code}&w={worker_id}",
        },
    )
    batch = Batch.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "panels:batch", args=[workflow.project.slug, batch.pk]
    )
    assert (batch.tasks_per_assignment, batch.n_assignments, batch.gold_share) == (5, 2, 0.4)

    page = client.get(response.url).content.decode()
    assert (
        "PROLIFIC_PID={{%PROLIFIC_PID%}}&amp;STUDY_ID={{%STUDY_ID%}}&amp;SESSION_ID={{%SESSION_ID%}}" in page
    )
    generic = re.search(r'value="(http://testserver/t/[^"?]+/\?worker_id=WORKER_ID)"', page).group(1)

    # The annotator: another browser, no account.
    client.logout()
    link = generic.replace("http://testserver", "").replace("WORKER_ID", "W0001")
    landing = client.get(link)
    assert landing.status_code == 200
    assert "I have read the above and agree to take part." in landing.content.decode()
    assert "Look at the difference image first." in landing.content.decode()
    assert not Assignment.objects.exists()

    started = client.post(
        reverse("panels:start", args=[link.split("/")[2]]), {"worker_id": "W0001", "consent": "yes"}
    )
    assert started.status_code == 302
    assignment = Assignment.objects.get()
    assert assignment.worker_id == "W0001" and len(assignment.subject_ids) == 5
    assert assignment.participant.kind == Participant.WORKER and assignment.participant.external_id == "W0001"
    urls = urls_of(assignment, batch)
    assert started.url == urls["task"]

    seen_progress = []
    for i in range(5):
        page = client.get(urls["task"])
        html = page.content.decode()
        seen_progress.append(re.search(r"<strong>(\d+) of (\d+)</strong>", html).groups())
        subject_id, key = task_form(html)
        response = answer(client, urls["vote"], subject_id, right_answer(subject_id), key)
        if i < 4:
            assert response.status_code == 200
            assert (
                f"<strong>{i + 1} of 5</strong>" in response.content.decode()
            )  # out-of-band progress update
            assert 'hx-swap-oob="true"' in response.content.decode()
    assert seen_progress == [(str(i), "5") for i in range(5)]
    assert response.headers["HX-Redirect"] == urls["done"]

    done = client.get(urls["done"]).content.decode()
    assignment.refresh_from_db()
    code = tasklinks.completion_code(assignment)
    assert code in done and assignment.completed_at is not None and assignment.n_done == 5
    assert f"https://panel.example.org/done?code={code}&amp;w=W0001" in done

    votes = Vote.objects.filter(assignment=assignment)
    assert votes.count() == 5
    assert {v.source for v in votes} == {"panel"}
    assert {v.participant_id for v in votes} == {assignment.participant_id}
    assert sorted(votes.values_list("subject_id", flat=True)) == sorted(assignment.subject_ids)
    assert votes.filter(was_gold=True).count() == 2  # 40 % of 5

    client.force_login(owner)
    csv_response = client.get(reverse("panels:batch_csv", args=[workflow.project.slug, batch.pk]))
    assert csv_response.status_code == 200 and csv_response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_response.content.decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["worker_id"] == "W0001" and row["assignment"] == str(assignment.pk)
    assert row["status"] == "complete" and row["tasks_done"] == "5" and row["completion_code"] == code
    assert row["gold_accuracy"] == "1.000" and row["completed"]


def test_worker_votes_are_ordinary_votes_that_teach_the_workers_skill(client, workflow):
    ordinary, gold = make_subjects(workflow, n_ordinary=4, n_gold=4)
    batch = make_batch(workflow, tasks_per_assignment=8, gold_share=0.5)
    start(client, batch, "5f1a2b3c4d5e6f7a8b9c0d1e", STUDY_ID="study1")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    work_through(client, urls["task"], urls["vote"])

    skill = ParticipantSkill.objects.get(workflow=workflow, participant=assignment.participant)
    assert skill.n_votes == 8 and skill.n_gold == 4 and skill.n_gold_correct == 4
    assert skill.p_l > 0.5 and skill.p_d > 0.5  # learned from gold, used on the next votes
    for subject in Subject.objects.filter(pk__in=[s.pk for s in ordinary]):
        assert subject.vote_count == 1 and subject.p_real is not None


def test_closing_the_tab_and_reopening_resumes(client, workflow):
    from django.test import Client

    make_subjects(workflow, n_ordinary=10, n_gold=2)
    batch = make_batch(workflow, tasks_per_assignment=6, gold_share=0.0)
    start(client, batch, "W42")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    for _ in range(2):
        subject_id, key = task_form(client.get(urls["task"]).content.decode())
        answer(client, urls["vote"], subject_id, "real", key)

    # The same browser: the study link resumes.
    reopened = client.get(landing_url(batch, worker_id="W42"))
    assert reopened.status_code == 302 and reopened.url == urls["task"]
    # A new browser: the study link and the worker id alone are not enough (anyone may know both), the
    # page says how to go on; the personal task link works there.
    fresh = Client()
    elsewhere = fresh.get(landing_url(batch, PROLIFIC_PID="W42", STUDY_ID="s", SESSION_ID="x"))
    assert elsewhere.status_code == 403 and "personal task link" in elsewhere.content.decode()
    page = fresh.get(urls["task"]).content.decode()
    assert "<strong>2 of 6</strong>" in page
    assert task_form(page)[0] == assignment.subject_ids[2]
    assert Assignment.objects.count() == 1


def test_a_second_attempt_shows_the_first_assignments_state(client, workflow):
    make_subjects(workflow, n_ordinary=10, n_gold=2)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.0)
    first = start(client, batch, "W7")
    second = start(client, batch, "W7")
    assert Assignment.objects.count() == 1
    assert first.url == second.url
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    work_through(client, urls["task"], urls["vote"])
    code = tasklinks.completion_code(assignment)
    # Taking it again after finishing: the same assignment, its code again, no new work.
    third = start(client, batch, "W7")
    assert third.url == urls["done"]
    assert code in client.get(landing_url(batch, worker_id="W7"), follow=True).content.decode()
    assert Assignment.objects.count() == 1 and Vote.objects.count() == 3


def test_double_submit_of_one_answer_is_stored_once(client, workflow):
    make_subjects(workflow, n_ordinary=6, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.0)
    start(client, batch, "W8")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    subject_id, key = task_form(client.get(urls["task"]).content.decode())
    answer(client, urls["vote"], subject_id, "real", key)
    answer(client, urls["vote"], subject_id, "real", key)
    answer(client, urls["vote"], subject_id, "bogus")  # another key, same subject: the first answer stands
    assert Vote.objects.filter(subject_id=subject_id).count() == 1
    assignment.refresh_from_db()
    assert assignment.n_done == 1


def test_preview_without_worker_id_shows_instructions_and_a_sample_and_records_nothing(client, workflow):
    ordinary, gold = make_subjects(workflow, n_ordinary=3, n_gold=3)
    batch = make_batch(workflow, tasks_per_assignment=4, gold_share=0.25)
    counts = (Participant.objects.count(), Assignment.objects.count(), Vote.objects.count())
    for url in (
        landing_url(batch),
        landing_url(batch, PROLIFIC_PID="{{%PROLIFIC_PID%}}", STUDY_ID="{{%STUDY_ID%}}"),
        landing_url(batch, worker_id="WORKER_ID"),
    ):
        response = client.get(url)
        html = response.content.decode()
        assert response.status_code == 200
        assert "This is a preview." in html and "Look carefully at the difference image." in html
        assert 'data-testid="sample"' in html
        assert 'method="post"' not in html
        assert "sessionid" not in response.cookies
    assert (Participant.objects.count(), Assignment.objects.count(), Vote.objects.count()) == counts


def test_completion_code_is_shown_only_after_the_last_task(client, workflow):
    make_subjects(workflow, n_ordinary=6, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.0)
    start(client, batch, "W9")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    code = tasklinks.completion_code(assignment)
    for _ in range(2):
        early = client.get(urls["done"])
        assert early.status_code == 302 and early.url == urls["task"]
        page = client.get(urls["task"]).content.decode()
        assert code not in page
        subject_id, key = task_form(page)
        response = answer(client, urls["vote"], subject_id, "bogus", key)
        assert code not in response.content.decode()
    assert not tasklinks.verify_completion_code(assignment, code)  # not complete yet
    subject_id, key = task_form(client.get(urls["task"]).content.decode())
    last = answer(client, urls["vote"], subject_id, "bogus", key, htmx=False)
    assert last.status_code == 302 and last.url == urls["done"]
    assert code in client.get(urls["done"]).content.decode()
    assignment.refresh_from_db()
    assert tasklinks.verify_completion_code(assignment, code.lower())
    assert not tasklinks.verify_completion_code(assignment, "AAAAAAAAAA")


def test_start_without_consent_is_refused_with_a_message(client, workflow):
    make_subjects(workflow, n_ordinary=4, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0)
    response = client.post(reverse("panels:start", args=[tasklinks.batch_token(batch)]), {"worker_id": "W10"})
    assert response.status_code == 400
    assert "Please tick the consent box" in response.content.decode()
    assert not Assignment.objects.exists()


def test_skip_counts_as_done_and_a_bad_answer_keeps_the_task(client, workflow):
    make_subjects(workflow, n_ordinary=4, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0)
    start(client, batch, "W11")
    assignment = Assignment.objects.get()
    urls = urls_of(assignment, batch)
    subject_id, key = task_form(client.get(urls["task"]).content.decode())
    bad = answer(client, urls["vote"], subject_id, "maybe", key)
    assert bad.status_code == 200 and "&#x27;maybe&#x27; is not an answer" in bad.content.decode()
    assert task_form(bad.content.decode())[0] == subject_id  # the same task again, nothing lost
    assert not Vote.objects.exists()
    skipped = answer(client, urls["vote"], subject_id, "skip", key, htmx=True)
    assert "<strong>1 of 2</strong>" in skipped.content.decode()
    assert Vote.objects.get().answer == "skip"
