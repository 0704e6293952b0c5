"""Task links that a stranger cannot hijack: the public study link plus a worker id never opens someone
else's assignment or completion code (the starting browser's key or the personal link does, with the
same panel session), new starts are rate-limited per address and per batch, and abandoned places go back
to the batch."""

import csv
import hashlib
import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core import signing
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core import ratelimit
from labeling.models import Vote
from panels import services as tasklinks
from panels.models import Assignment, Batch
from tests.tasklinks_support import (
    answer,
    landing_url,
    make_batch,
    make_subjects,
    start,
    task_form,
    urls_of,
    work_through,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_limits(settings):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def batch(workflow):
    make_subjects(workflow, n_ordinary=12, n_gold=2)
    return make_batch(workflow, tasks_per_assignment=3, gold_share=0.0, n_assignments=5)


def _start_in(client, batch, worker_id, **query):
    """The real way in: open the study link (which hands the browser its key), then consent and start."""
    landing = client.get(landing_url(batch, **{"worker_id": worker_id, **query}))
    assert landing.status_code == 200, landing.content[:300]
    data = {"worker_id": worker_id, "consent": "yes"}
    data.update({k.lower(): v for k, v in query.items() if k in ("STUDY_ID", "SESSION_ID")})
    response = client.post(reverse("panels:start", args=[tasklinks.batch_token(batch)]), data)
    assert response.status_code == 302, response.content[:300]
    return Assignment.objects.get(batch=batch, worker_id=worker_id)


def _refused_elsewhere(response, *secrets):
    html = response.content.decode()
    assert response.status_code == 403, (response.status_code, html[:300])
    assert 'data-reason="elsewhere"' in html
    for secret in secrets:
        assert secret not in html
    return html


def test_the_study_link_and_a_worker_id_do_not_open_another_workers_assignment(batch):
    victim = Client()
    assignment = _start_in(victim, batch, "VICTIM1")
    urls = urls_of(assignment, batch)
    subject_id, key = task_form(victim.get(urls["task"]).content.decode())
    answer(victim, urls["vote"], subject_id, "real", key)
    akey = tasklinks.assignment_token(assignment)

    stranger = Client()
    _refused_elsewhere(stranger.get(landing_url(batch, worker_id="VICTIM1")), akey)
    _refused_elsewhere(stranger.get(landing_url(batch, PROLIFIC_PID="VICTIM1")), akey)
    started = stranger.post(
        reverse("panels:start", args=[tasklinks.batch_token(batch)]),
        {"worker_id": "VICTIM1", "consent": "yes"},
    )
    _refused_elsewhere(started, akey)
    assert Assignment.objects.count() == 1 and Vote.objects.count() == 1

    # Their own browser still goes on where it left off.
    resumed = victim.get(landing_url(batch, worker_id="VICTIM1"))
    assert resumed.status_code == 302 and resumed.url == urls["task"]


def test_a_completion_code_needs_the_workers_own_browser_or_personal_link(batch):
    victim = Client()
    assignment = _start_in(victim, batch, "VICTIM2")
    urls = urls_of(assignment, batch)
    work_through(victim, urls["task"], urls["vote"])
    assignment.refresh_from_db()
    code = tasklinks.completion_code(assignment)

    stranger = Client()
    for response in (
        stranger.get(landing_url(batch, worker_id="VICTIM2"), follow=True),
        stranger.post(
            reverse("panels:start", args=[tasklinks.batch_token(batch)]),
            {"worker_id": "VICTIM2", "consent": "yes"},
            follow=True,
        ),
    ):
        _refused_elsewhere(response, code, tasklinks.assignment_token(assignment))

    assert code in victim.get(landing_url(batch, worker_id="VICTIM2"), follow=True).content.decode()
    assert code in Client().get(urls["done"]).content.decode()  # the personal link, any browser


def test_a_strangers_own_key_or_a_forged_cookie_opens_nothing_of_anothers(batch, workflow):
    victim = Client()
    assignment = _start_in(victim, batch, "VICTIM3")
    name = tasklinks.resume_cookie_name(batch)

    stranger = Client()
    _start_in(stranger, batch, "STRANGER")  # a valid key of this batch, for their own assignment only
    _refused_elsewhere(stranger.get(landing_url(batch, worker_id="VICTIM3")))

    other = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, name="Other")
    from_other_batch = Client()
    _start_in(from_other_batch, other, "VICTIM3")
    for value in (
        victim.cookies[name].value[:-3] + "xyz",  # tampered signature
        "made-up-key",
        from_other_batch.cookies[tasklinks.resume_cookie_name(other)].value,  # another batch's key
    ):
        forger = Client()
        forger.cookies[name] = value
        _refused_elsewhere(forger.get(landing_url(batch, worker_id="VICTIM3")))
    assert Assignment.objects.get(pk=assignment.pk).n_done == 0


def test_the_resume_key_is_stored_hashed_and_its_cookie_is_http_only_and_scoped_to_the_batch(batch):
    browser = Client()
    landing = browser.get(landing_url(batch, worker_id="W1"))
    cookie = landing.cookies[tasklinks.resume_cookie_name(batch)]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == reverse("panels:landing", args=[tasklinks.batch_token(batch)])
    assignment = _start_in(browser, batch, "W1")
    name = tasklinks.resume_cookie_name(batch)
    key = signing.get_cookie_signer(salt=name + tasklinks.resume_cookie_salt(batch)).unsign(cookie.value)
    assert len(key) >= 40  # a random secret, not derived from anything a stranger knows
    assert assignment.resume_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in assignment.resume_key_hash


def test_a_different_panel_session_id_for_the_same_worker_does_not_resume(batch):
    browser = Client()
    assignment = _start_in(browser, batch, "5f1a2b3c4d5e6f7a8b9c0d1e", STUDY_ID="st1", SESSION_ID="sess1")
    assert assignment.session_id == "sess1"
    pid = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "st1"}

    same = browser.get(landing_url(batch, SESSION_ID="sess1", **pid))
    assert same.status_code == 302 and same.url == urls_of(assignment, batch)["task"]
    _refused_elsewhere(browser.get(landing_url(batch, SESSION_ID="sess2", **pid)))
    _refused_elsewhere(browser.get(landing_url(batch, **pid)))  # Prolific always sends one
    again = browser.post(
        reverse("panels:start", args=[tasklinks.batch_token(batch)]),
        {"worker_id": "5f1a2b3c4d5e6f7a8b9c0d1e", "session_id": "sess2", "consent": "yes"},
    )
    _refused_elsewhere(again)
    assert Assignment.objects.count() == 1


def test_a_worker_who_lost_the_cookie_is_told_how_to_continue_and_the_personal_link_works(batch):
    browser = Client()
    assignment = _start_in(browser, batch, "W42")
    urls = urls_of(assignment, batch)
    page = browser.get(urls["task"]).content.decode()
    assert f'href="{urls["task"]}"' in page and 'data-testid="personal-link"' in page
    subject_id, key = task_form(page)
    answer(browser, urls["vote"], subject_id, "real", key)

    new_browser = Client()
    html = _refused_elsewhere(new_browser.get(landing_url(batch, worker_id="W42")), "1 of 3")
    assert "personal task link" in html and "contact the researchers" in html
    assert "Already started elsewhere" in html

    personal = new_browser.get(urls["task"])
    assert personal.status_code == 200 and "<strong>1 of 3</strong>" in personal.content.decode()


# --- starts rate-limited per address and per batch ------------------------------------------------


@pytest.fixture
def rate_clock(monkeypatch):
    """The limiter's clock, held mid-minute: a test must not straddle a window boundary by chance."""
    clock = SimpleNamespace(now=1_800_000_030.0)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def test_made_up_worker_ids_from_one_address_cannot_fill_a_batch(workflow, rate_clock):
    make_subjects(workflow, n_ordinary=10, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, n_assignments=49)
    script = Client()
    codes = [start(script, batch, f"FAKE{i:02d}").status_code for i in range(49)]
    limit = 10  # new starts a minute from one address, by default (docs/panels.md)
    assert codes[:limit] == [302] * limit and set(codes[limit:]) == {429}
    assert Assignment.objects.filter(batch=batch).count() == limit

    refused = start(script, batch, "FAKE99")
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    html = refused.content.decode()
    assert 'data-testid="rate-limited"' in html and "Please wait a minute" in html
    assert "Nothing was recorded" in html
    # Someone else, elsewhere, is not held up by it.
    assert start(Client(REMOTE_ADDR="198.51.100.7"), batch, "REAL1").status_code == 302


def test_start_limits_per_address_and_per_batch_come_from_settings(settings, workflow, rate_clock):
    make_subjects(workflow, n_ordinary=10, n_gold=0)
    settings.SKYVOTE_RATE_LIMITS = {"panel_start": {"address": (2, 60), "batch": (3, 60)}}
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, n_assignments=20)
    other = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, n_assignments=20, name="B")

    home = Client(REMOTE_ADDR="203.0.113.1")
    assert start(home, batch, "A1").status_code == 302
    assert start(home, batch, "A2").status_code == 302
    assert start(home, batch, "A3").status_code == 429  # per address, whatever the worker id
    assert start(home, other, "A4").status_code == 429  # and whatever the batch
    assert start(home, batch, "A1").status_code == 302  # resuming is not a new start
    # One IPv6 subscriber (a /64) is one address.
    v6 = [Client(REMOTE_ADDR=f"2001:db8:1:2::{i}") for i in (1, 2, 3)]
    assert [start(c, other, f"V{i}").status_code for i, c in enumerate(v6)] == [302, 302, 429]

    assert start(Client(REMOTE_ADDR="203.0.113.2"), batch, "B1").status_code == 302
    assert start(Client(REMOTE_ADDR="203.0.113.3"), batch, "B2").status_code == 429  # per batch: 3 a minute
    assert start(Client(REMOTE_ADDR="203.0.113.4"), other, "B3").status_code == 302  # other batch: own count
    assert Assignment.objects.filter(batch=batch).count() == 3

    rate_clock.now += 60  # the minute passes
    assert start(Client(REMOTE_ADDR="203.0.113.3"), batch, "B2").status_code == 302


# --- abandoned places go back to the batch ------------------------------------------------------------


def _age(assignment, minutes):
    Assignment.objects.filter(pk=assignment.pk).update(started_at=timezone.now() - timedelta(minutes=minutes))


def test_an_abandoned_place_goes_back_to_the_batch_and_cannot_be_resumed(client, owner, workflow):
    make_subjects(workflow, n_ordinary=12, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.0, n_assignments=2)
    idle_browser, busy_browser = Client(), Client()
    idle = _start_in(idle_browser, batch, "IDLE")
    busy = _start_in(busy_browser, batch, "BUSY")
    busy_urls = urls_of(busy, batch)
    subject_id, key = task_form(busy_browser.get(busy_urls["task"]).content.decode())
    answer(busy_browser, busy_urls["vote"], subject_id, "real", key)
    full = Client().get(landing_url(batch, worker_id="NEW1"))
    assert full.status_code == 410 and 'data-reason="full"' in full.content.decode()

    _age(idle, 31)  # no answer for longer than the default 30 minutes
    _age(busy, 31)  # started as long ago, but answered a minute ago: still working
    newcomer = Client()
    assert newcomer.get(landing_url(batch, worker_id="NEW1")).status_code == 200
    _start_in(newcomer, batch, "NEW1")
    idle.refresh_from_db()
    busy.refresh_from_db()
    assert idle.released_at is not None and busy.released_at is None
    assert Assignment.objects.filter(batch=batch).count() == 3  # the row stays, for the record
    assert Client().get(landing_url(batch, worker_id="NEW2")).status_code == 410  # full again

    # The abandoned worker id can no longer go on: not from its browser, nor with its personal link.
    for response in (
        idle_browser.get(landing_url(batch, worker_id="IDLE")),
        idle_browser.get(urls_of(idle, batch)["task"]),
    ):
        assert response.status_code == 410 and 'data-reason="released"' in response.content.decode()
    refused = answer(idle_browser, urls_of(idle, batch)["vote"], idle.subject_ids[0], "real")
    assert refused.status_code == 410
    assert not Vote.objects.filter(assignment=idle).exists()
    assert busy_browser.get(landing_url(batch, worker_id="BUSY")).status_code == 302

    client.force_login(owner)
    slug = workflow.project.slug
    page = client.get(reverse("panels:batch", args=[slug, batch.pk])).content.decode()
    assert "2 of 2 assignments started" in page and "1 abandoned" in page
    row = page.split(f'id="assignment-{idle.pk}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-testid="abandoned"' in row
    rows = {
        r["worker_id"]: r
        for r in csv.DictReader(
            io.StringIO(client.get(reverse("panels:batch_csv", args=[slug, batch.pk])).content.decode())
        )
    }
    assert rows["IDLE"]["status"] == "abandoned" and rows["BUSY"]["status"] == "in progress"


def test_an_assignment_idle_for_the_timeout_after_some_answers_is_released_with_its_votes(settings, workflow):
    make_subjects(workflow, n_ordinary=12, n_gold=0)
    settings.SKYVOTE_PANEL_ABANDON_AFTER = timedelta(minutes=5)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.0, n_assignments=1)
    browser = Client()
    assignment = _start_in(browser, batch, "W1")
    urls = urls_of(assignment, batch)
    subject_id, key = task_form(browser.get(urls["task"]).content.decode())
    answer(browser, urls["vote"], subject_id, "real", key)

    _age(assignment, 4)
    assert browser.get(urls["task"]).status_code == 200  # inside the timeout
    _age(assignment, 10)
    Vote.objects.filter(assignment=assignment).update(created_at=timezone.now() - timedelta(minutes=6))
    assert tasklinks.batch_problem_for_new_worker(Batch.objects.get(pk=batch.pk)) is None
    assert browser.get(urls["task"]).status_code == 410
    assignment.refresh_from_db()
    assert assignment.released_at is not None and assignment.n_done == 1
    assert Vote.objects.filter(assignment=assignment).count() == 1  # kept for the record


def test_finished_assignments_are_never_released(workflow):
    make_subjects(workflow, n_ordinary=6, n_gold=0)
    batch = make_batch(workflow, tasks_per_assignment=2, gold_share=0.0, n_assignments=1)
    browser = Client()
    assignment = _start_in(browser, batch, "W1")
    urls = urls_of(assignment, batch)
    work_through(browser, urls["task"], urls["vote"])
    Assignment.objects.filter(pk=assignment.pk).update(started_at=timezone.now() - timedelta(days=1))
    Vote.objects.filter(assignment=assignment).update(created_at=timezone.now() - timedelta(days=1))
    assert tasklinks.release_abandoned(batch) == 0
    problem = tasklinks.batch_problem_for_new_worker(batch)
    assert problem is not None and problem.reason == tasklinks.TaskLinkError.FULL
    assignment.refresh_from_db()
    assert tasklinks.completion_code(assignment) in browser.get(urls["done"]).content.decode()
