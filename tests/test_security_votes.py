"""A vote is only accepted for a subject that was served.

1. Served-subject tickets (core.tickets): the pages and GET …/workflows/{id}/next/ hand a subject out with
   a signed ticket bound to (workflow, subject or task, participant, served-at); a vote without it, with
   another participant's, for another subject or workflow, or after it expired is refused (4xx) and
   stores nothing. A late vote with a valid ticket is stored and flagged. Real/bogus votes for
   similarity subjects (and the reverse) are refused.
2. Gold answers are never sent before the vote, and the expert's answer comes back only for a subject
   served as gold to that participant, once.
3. Skill and the gold schedule count only votes cast on served tickets, with the ticket's gold flag.
4. Rate limits per participant and per client address, on serving and voting (core.ratelimit), also
   under the task links.

Pages go through the Django test client, the API through DRF's APIClient; the races run on PostgreSQL.
"""

import json
import re
import threading
import time
import uuid

import pytest
from django.core import signing
from django.db import connections
from django.urls import reverse
from rest_framework.test import APIClient

from core import ratelimit, tickets
from core.models import Participant, Subject, Workflow
from labeling.gold import clear_gold, set_gold
from labeling.models import ParticipantSkill, Vote
from labeling.selection import n_answered, ticket_for
from labeling.services import VoteError, record_vote
from similarity.models import SimilarityTask, SimilarityVote
from similarity.selection import create_task
from similarity.services import SimilarityVoteError, record_similarity_vote
from tests.similarity_support import similarity_workflow

pytestmark = pytest.mark.django_db

REAL_TIME = time.time


# ---------------------------------------------------------------------------------------------
# Helpers


def next_url(workflow):
    return reverse("api_workflow_next", args=[workflow.project.slug, workflow.pk])


def classify_url(workflow):
    return reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])


def vote_url(workflow):
    return reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])


def serve(api, workflow):
    response = api.get(next_url(workflow))
    assert response.status_code == 200, response.content
    return response.json()


def api_vote(api, workflow, subject_id, ticket, answer="real", key=None):
    body = {
        "workflow": workflow.pk,
        "subject": subject_id,
        "answer": answer,
        "idempotency_key": str(key or uuid.uuid4()),
    }
    if ticket is not None:
        body["ticket"] = ticket
    return api.post("/api/votes/", body, format="json")


def page_form(html: str) -> dict:
    """What the classify page's form sends with an answer."""
    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
        for name in ("subject", "ticket", "key")
    }


def gold_subjects(workflow, n, start=0):
    return [
        Subject.objects.create(
            project=workflow.project,
            workflow=workflow,
            external_id=f"checked-{start + i}",
            gold_label="real" if i % 2 else "bogus",
            gold_subtype="variable_star" if i % 2 else "cosmic_ray",
        )
        for i in range(n)
    ]


def ordinary_subjects(workflow, n, start=0):
    return [
        Subject.objects.create(project=workflow.project, workflow=workflow, external_id=f"plain-{start + i}")
        for i in range(n)
    ]


def later(monkeypatch, seconds):
    """Move the clock forward (signing and the rate limiter read time.time)."""
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + seconds)


def limits(settings, **actions):
    """Rate limits for this test, counted in a cache of its own (counts are kept by participant id,
    and the test database hands out the same ids again)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }
    big = (1_000_000, 86_400)
    settings.SKYVOTE_RATE_LIMITS = {
        action: {"participant": big, "address": big, **actions.get(action, {})}
        for action in ("serve", "vote")
    }


# ---------------------------------------------------------------------------------------------
# 1. Served-subject tickets


def test_api_votes_need_the_ticket_of_the_subject_they_answer(workflow, make_subjects):
    make_subjects(3)
    alice, bob = APIClient(), APIClient()
    served = serve(alice, workflow)
    assert served["ticket"] and served["subject"] and served["expires_at"] > served["served_at"]
    other = Subject.objects.filter(workflow=workflow).exclude(pk=served["subject"]).first()

    missing = api_vote(alice, workflow, served["subject"], None)
    assert missing.status_code == 400 and "no ticket" in missing.json()["detail"]
    forged = api_vote(alice, workflow, served["subject"], served["ticket"][:-3] + "abc")
    assert forged.status_code == 403 and "not valid" in forged.json()["detail"]
    elsewhere = api_vote(alice, workflow, other.pk, served["ticket"])
    assert elsewhere.status_code == 403 and "another subject" in elsewhere.json()["detail"]
    stolen = api_vote(bob, workflow, served["subject"], served["ticket"])
    assert stolen.status_code == 403 and "someone else" in stolen.json()["detail"]
    assert not Vote.objects.exists()

    ok = api_vote(alice, workflow, served["subject"], served["ticket"])
    assert ok.status_code == 201 and ok.json()["created"] is True
    assert Vote.objects.get().participant.session_key  # alice's anonymous session


def test_a_ticket_counts_only_in_its_own_workflow(project, workflow, make_subjects):
    other = Workflow.objects.create(project=project, slug="rb2", name="Second", retirement_limit=3)
    make_subjects(1, seed=1)
    make_subjects(1, seed=2, wf=other)
    api = APIClient()
    there = serve(api, other)
    refused = api_vote(api, workflow, there["subject"], there["ticket"])
    assert refused.status_code == 400 and "not part of this workflow" in refused.json()["detail"]
    participant = Participant.objects.get(session_key=api.session.session_key)
    with pytest.raises(tickets.TicketError, match="another workflow"):
        tickets.verify(
            there["ticket"],
            workflow_id=workflow.pk,
            kind=tickets.SUBJECT,
            item_id=there["subject"],
            participant=participant,
        )
    assert not Vote.objects.exists()


def test_an_expired_ticket_is_refused_on_the_api_and_the_page_gets_a_fresh_one(
    client, workflow, make_subjects, monkeypatch, settings
):
    from skyvote import settings as configured

    assert configured.SKYVOTE_TICKET_MAX_AGE_S == 3600  # the default: an hour
    make_subjects(3)
    api = APIClient()
    served = serve(api, workflow)
    html = client.get(classify_url(workflow)).content.decode()
    form = page_form(html)

    later(monkeypatch, 3601)
    expired = api_vote(api, workflow, served["subject"], served["ticket"])
    assert expired.status_code == 403 and "more than 60 minutes ago" in expired.json()["detail"]
    response = client.post(vote_url(workflow), {**form, "answer": "real"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 403 and 'role="alert"' in body and "more than 60 minutes ago" in body
    assert not Vote.objects.exists()

    fresh = page_form(body)  # the refusal serves a new subject with a new ticket, valid from now
    assert fresh["ticket"] != form["ticket"]
    stored = client.post(vote_url(workflow), {**fresh, "answer": "bogus"}, HTTP_HX_REQUEST="true")
    assert stored.status_code == 200 and Vote.objects.count() == 1


def test_a_late_vote_with_a_valid_ticket_is_stored_and_flagged(workflow, make_subjects):
    make_subjects(1)
    api = APIClient()
    served = serve(api, workflow)
    Subject.objects.filter(pk=served["subject"]).update(
        status=Subject.RETIRED, retired_reason="count: 3 votes"
    )
    response = api_vote(api, workflow, served["subject"], served["ticket"])
    assert response.status_code == 201 and response.json()["late"] is True
    assert Vote.objects.get().subject_was_retired


def test_page_votes_without_a_ticket_or_with_someone_elses_are_refused(client, workflow, make_subjects):
    make_subjects(2)
    form = page_form(client.get(classify_url(workflow)).content.decode())
    unticketed = {**form, "ticket": "", "answer": "real"}
    response = client.post(vote_url(workflow), unticketed, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "no ticket" in response.content.decode()
    plain = client.post(vote_url(workflow), unticketed)  # without JavaScript: the whole page, not a redirect
    assert (
        plain.status_code == 400
        and "no ticket" in plain.content.decode()
        and "<html" in plain.content.decode()
    )

    other = APIClient()
    theirs = page_form(other.get(classify_url(workflow)).content.decode())
    response = client.post(vote_url(workflow), {**theirs, "answer": "real"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403 and "someone else" in response.content.decode()
    assert not Vote.objects.exists()


def test_similarity_answers_are_bound_to_the_task_they_were_served_with(client, project):
    workflow = similarity_workflow(project, n_subjects=20)
    html = client.get(workflow.get_absolute_url()).content.decode()
    task_id = int(re.search(r'name="task" value="(\d+)"', html).group(1))
    ticket = re.search(r'name="ticket" value="([^"]+)"', html).group(1)
    key = re.search(r'name="key" value="([^"]+)"', html).group(1)
    answer_url = reverse("similarity:submit", args=[project.slug, workflow.slug])
    another = create_task(workflow)

    swapped = client.post(
        answer_url, {"task": another.pk, "none": "1", "key": key, "ticket": ticket}, HTTP_HX_REQUEST="true"
    )
    assert swapped.status_code == 403 and "another task" in swapped.content.decode()
    assert f'name="task" value="{another.pk}"' not in swapped.content.decode()  # never served by the refusal
    missing = client.post(answer_url, {"task": task_id, "none": "1", "key": key}, HTTP_HX_REQUEST="true")
    assert missing.status_code == 400 and "no ticket" in missing.content.decode()
    assert not SimilarityVote.objects.exists()

    ok = client.post(
        answer_url, {"task": task_id, "none": "1", "key": key, "ticket": ticket}, HTTP_HX_REQUEST="true"
    )
    assert ok.status_code == 200 and SimilarityVote.objects.get().task_id == task_id


def test_real_bogus_votes_for_similarity_subjects_and_the_reverse_are_refused(
    project, workflow, make_subjects
):
    make_subjects(2)
    sim = similarity_workflow(project, n_subjects=20)
    sim_subject = sim.subjects.first()
    api = APIClient()
    served = serve(api, workflow)

    crossed = api_vote(api, workflow, sim_subject.pk, served["ticket"])
    assert crossed.status_code == 400 and "not part of this workflow" in crossed.json()["detail"]
    wrong_kind = api_vote(api, sim, sim_subject.pk, served["ticket"])
    assert wrong_kind.status_code == 400 and "takes no real/bogus votes" in wrong_kind.json()["detail"]
    no_next = api.get(next_url(sim))
    assert no_next.status_code == 400 and "similar" in no_next.json()["detail"]
    # Not even a trusted caller (an import) may put a real/bogus vote on a similarity subject.
    someone = Participant.objects.create(kind=Participant.WORKER, external_id="import:x")
    with pytest.raises(VoteError, match="not part of this workflow"):
        record_vote(
            workflow=workflow,
            subject_id=sim_subject.pk,
            participant=someone,
            answer="real",
            idempotency_key=uuid.uuid4(),
            trusted=True,
        )
    # The reverse: a similarity answer in a real/bogus workflow.
    rb_subjects = list(Subject.objects.filter(workflow=workflow))
    task = SimilarityTask.objects.create(
        workflow=workflow, comparison=rb_subjects[0], candidates=[rb_subjects[1].pk]
    )
    with pytest.raises(SimilarityVoteError, match="takes no similarity answers"):
        record_similarity_vote(
            task=task,
            participant=someone,
            chosen=[rb_subjects[1].pk],
            none_similar=False,
            idempotency_key=uuid.uuid4(),
            trusted=True,
        )
    assert not Vote.objects.exists() and not SimilarityVote.objects.exists()


def test_imported_votes_need_no_ticket(workflow, make_subjects):
    from labeling.imports import import_votes

    subjects = make_subjects(2)
    lines = ["subject_external_id,participant,answer,created_at"] + [
        f"{s.external_id},zoo-{i},real,2024-05-01T10:00:0{i}Z" for i, s in enumerate(subjects)
    ]
    _fmt, report = import_votes(workflow, "\n".join(lines))
    assert report.imported == 2 and Vote.objects.filter(source="import").count() == 2


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_refused_vote_shows_why_and_the_next_key_press_counts(
    page, live_server, workflow, make_subjects, monkeypatch
):
    make_subjects(4)
    page.goto(f"{live_server.url}{classify_url(workflow)}")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    later(monkeypatch, 3601)  # the page was left open for more than an hour
    page.keyboard.press("r")
    page.wait_for_selector("#task [role=alert]")
    assert "more than 60 minutes ago" in page.inner_text("#task [role=alert]")
    assert not Vote.objects.exists()
    page.keyboard.press("b")  # the fresh subject that came with the refusal
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    assert Vote.objects.get().answer == "bogus"


# ---------------------------------------------------------------------------------------------
# 2. Gold answers


def test_gold_answers_cannot_be_harvested_from_the_vote_api(workflow):
    gold = gold_subjects(workflow, 20)
    ordinary_subjects(workflow, 5)
    workflow.gold_schedule = [[None, 0.0]]
    workflow.save(update_fields=["gold_schedule"])
    harvester = APIClient()
    replies = []
    for subject in gold:
        replies.append(api_vote(harvester, workflow, subject.pk, None, answer="real"))
        served = serve(harvester, workflow)  # an ordinary subject: its ticket does not fit a gold one
        replies.append(served)
        replies.append(api_vote(harvester, workflow, subject.pk, served["ticket"], answer="bogus"))
    statuses = [r.status_code for r in replies if hasattr(r, "status_code")]
    assert statuses == [400, 403] * 20
    text = json.dumps([r.json() if hasattr(r, "json") else r for r in replies])
    assert "expert" not in text and "feedback" not in text
    assert "Variable star" not in text and "variable_star" not in text and "cosmic" not in text.lower()
    assert not Vote.objects.exists() and not ParticipantSkill.objects.exists()


def test_the_expert_answer_comes_once_and_only_for_a_subject_served_as_gold(workflow):
    (g,) = gold_subjects(workflow, 1)
    api = APIClient()
    served = serve(api, workflow)
    assert served["subject"] == g.pk
    assert "gold" not in json.dumps(served) and "cosmic" not in json.dumps(served)  # nothing before the vote
    key = uuid.uuid4()
    first = api_vote(api, workflow, g.pk, served["ticket"], answer="real", key=key)
    assert first.status_code == 201
    feedback = first.json()["feedback"]
    assert feedback["expert_answer"] == "bogus" and feedback["correct"] is False
    replay = api_vote(api, workflow, g.pk, served["ticket"], answer="real", key=key)
    assert (
        replay.status_code == 200 and replay.json()["created"] is False and replay.json()["feedback"] is None
    )
    again = api_vote(
        api, workflow, g.pk, served["ticket"], answer="bogus"
    )  # a new key: the first vote stands
    assert again.status_code == 200 and again.json()["feedback"] is None and again.json()["answer"] == "real"
    assert Vote.objects.get().was_gold


def test_the_gold_flag_is_the_tickets_not_the_subjects_current_label(workflow, owner):
    plain, gold, kept = ordinary_subjects(workflow, 1) + gold_subjects(workflow, 2)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    tickets_now = {s.pk: ticket_for(workflow, Subject.objects.get(pk=s.pk), p) for s in (plain, gold, kept)}
    set_gold(plain, "real", owner)  # became gold after it was served
    clear_gold(gold)  # stopped being gold after it was served as gold

    for subject in (plain, gold):
        result = record_vote(
            workflow=workflow,
            subject_id=subject.pk,
            participant=p,
            answer="real",
            idempotency_key=uuid.uuid4(),
            ticket=tickets_now[subject.pk],
        )
        assert result.created and result.feedback is None and not result.vote.was_gold
        assert result.vote.gold_correct is None
    assert ParticipantSkill.objects.get(participant=p).n_gold == 0

    result = record_vote(
        workflow=workflow,
        subject_id=kept.pk,
        participant=p,
        answer="real",
        idempotency_key=uuid.uuid4(),
        ticket=tickets_now[kept.pk],
    )
    assert result.feedback["expert_answer"] == "real" and result.vote.was_gold
    skill = ParticipantSkill.objects.get(participant=p)
    assert (skill.n_gold, skill.n_gold_correct) == (1, 1)


def test_a_ticket_does_not_show_whether_its_subject_is_gold(workflow):
    (plain,) = ordinary_subjects(workflow, 1)
    (gold,) = gold_subjects(workflow, 1)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    readable = [signing.loads(ticket_for(workflow, s, p), salt=tickets.SALT) for s in (plain, gold)]
    assert [sorted(r) for r in readable] == [sorted(readable[0])] * 2
    for payload in readable:
        assert not any(isinstance(v, bool) for v in payload.values())
        assert re.fullmatch(r"[0-9a-f]{16}", payload["g"])
    # Only the server tells them apart.
    verified = [
        tickets.verify(
            ticket_for(workflow, s, p),
            workflow_id=workflow.pk,
            kind=tickets.SUBJECT,
            item_id=s.pk,
            participant=p,
        )
        for s in (plain, gold)
    ]
    assert [t.as_gold for t in verified] == [False, True]


def test_the_classify_page_shows_gold_feedback_once_with_and_without_javascript(client, workflow):
    gold_subjects(workflow, 4)
    form = page_form(client.get(classify_url(workflow)).content.decode())
    html = client.post(
        vote_url(workflow), {**form, "answer": "real"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'data-testid="feedback"' in html and "the experts said" in html
    replay = client.post(
        vote_url(workflow), {**form, "answer": "real"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'data-testid="feedback"' not in replay

    no_js = APIClient()
    form = page_form(no_js.get(classify_url(workflow)).content.decode())
    assert no_js.post(vote_url(workflow), {**form, "answer": "bogus"}).status_code == 302
    shown = no_js.get(classify_url(workflow)).content.decode()
    assert 'data-testid="feedback"' in shown and "the experts said" in shown
    assert 'data-testid="feedback"' not in no_js.get(classify_url(workflow)).content.decode()


# ---------------------------------------------------------------------------------------------
# 3. Skill and the gold schedule


def test_skill_cannot_be_farmed_with_votes_on_subjects_never_served(workflow):
    gold = gold_subjects(workflow, 6)
    ordinary_subjects(workflow, 6)
    workflow.gold_schedule = [[None, 0.0]]
    workflow.save(update_fields=["gold_schedule"])
    farmer = APIClient()
    for subject in gold:  # the right answers, somehow known
        assert api_vote(farmer, workflow, subject.pk, None, answer=subject.gold_label).status_code == 400
        ordinary_ticket = serve(farmer, workflow)["ticket"]
        refused = api_vote(farmer, workflow, subject.pk, ordinary_ticket, answer=subject.gold_label)
        assert refused.status_code == 403
    assert not ParticipantSkill.objects.exists() and not Vote.objects.exists()


def test_the_gold_schedule_counts_only_votes_cast_on_served_tickets(workflow):
    subjects = ordinary_subjects(workflow, 40)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    for s in subjects[:30]:  # votes with their own provenance, not served by the selector
        record_vote(
            workflow=workflow,
            subject_id=s.pk,
            participant=p,
            answer="real",
            idempotency_key=uuid.uuid4(),
            source="import",
            trusted=True,
        )
    assert n_answered(workflow, p) == 0 and workflow.gold_share_for(n_answered(workflow, p)) == 0.4
    for s in subjects[30:32]:
        record_vote(
            workflow=workflow,
            subject_id=s.pk,
            participant=p,
            answer="skip",
            idempotency_key=uuid.uuid4(),
            ticket=ticket_for(workflow, s, p),
        )
    assert n_answered(workflow, p) == 2


# ---------------------------------------------------------------------------------------------
# 4. Rate limits


def test_votes_over_the_participant_limit_are_refused_with_429(settings, workflow, make_subjects):
    limits(settings, vote={"participant": (3, 86_400)})
    make_subjects(5)
    alice, bob = APIClient(REMOTE_ADDR="198.51.100.21"), APIClient(REMOTE_ADDR="198.51.100.21")
    for _ in range(3):
        served = serve(alice, workflow)
        assert api_vote(alice, workflow, served["subject"], served["ticket"]).status_code == 201
    served = serve(alice, workflow)
    refused = api_vote(alice, workflow, served["subject"], served["ticket"])
    assert refused.status_code == 429 and "slow down" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    assert Vote.objects.count() == 3
    theirs = serve(bob, workflow)  # someone else at the same address is not held up
    assert api_vote(bob, workflow, theirs["subject"], theirs["ticket"]).status_code == 201


def test_a_script_that_drops_its_cookies_meets_the_address_limit(settings, workflow, make_subjects):
    limits(settings, serve={"address": (5, 86_400)})
    make_subjects(2)
    statuses = [APIClient(REMOTE_ADDR="203.0.113.77").get(next_url(workflow)).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert APIClient(REMOTE_ADDR="203.0.113.78").get(next_url(workflow)).status_code == 200
    # An IPv6 subscriber has a whole /64 to rotate through: it counts as one address.
    statuses = [
        APIClient(REMOTE_ADDR=f"2001:db8::{i}").get(next_url(workflow)).status_code for i in range(1, 7)
    ]
    assert statuses == [200] * 5 + [429]
    assert APIClient(REMOTE_ADDR="2001:db8:0:1::1").get(next_url(workflow)).status_code == 200


def test_the_pages_say_slow_down_and_keep_what_was_served(settings, client, project, workflow, make_subjects):
    make_subjects(4)
    limits(settings, vote={"participant": (1, 86_400)})
    form = page_form(client.get(classify_url(workflow)).content.decode())
    html = client.post(
        vote_url(workflow), {**form, "answer": "real"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    second = page_form(html)
    response = client.post(vote_url(workflow), {**second, "answer": "bogus"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 429 and "slow down" in body and 'role="alert"' in body
    assert page_form(body) == second  # the same subject, ticket and key, to answer again
    assert Vote.objects.count() == 1

    limits(settings, serve={"participant": (0, 86_400)})
    page = client.get(classify_url(workflow))
    assert (
        page.status_code == 429
        and "slow down" in page.content.decode()
        and 'name="ticket"' not in page.content.decode()
    )

    sim = similarity_workflow(project, n_subjects=20)
    limits(settings, vote={"participant": (0, 86_400)})
    html = client.get(sim.get_absolute_url()).content.decode()
    task = re.search(r'name="task" value="(\d+)"', html).group(1)
    ticket = re.search(r'name="ticket" value="([^"]+)"', html).group(1)
    answer_url = reverse("similarity:submit", args=[project.slug, sim.slug])
    refused = client.post(
        answer_url,
        {"task": task, "none": "1", "key": str(uuid.uuid4()), "ticket": ticket},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 429 and "slow down" in refused.content.decode()
    assert f'name="task" value="{task}"' in refused.content.decode() and not SimilarityVote.objects.exists()


def test_the_default_limits_are_far_above_a_volunteer(settings, workflow, make_subjects):
    from skyvote import settings as configured

    for action in ("serve", "vote"):
        assert configured.SKYVOTE_RATE_LIMITS[action] == {"participant": (120, 60), "address": (600, 60)}
    limits(settings)
    settings.SKYVOTE_RATE_LIMITS = configured.SKYVOTE_RATE_LIMITS
    make_subjects(40)
    volunteer = APIClient(REMOTE_ADDR="192.0.2.200")
    for _ in range(40):  # faster than anyone classifies: serve and vote back to back
        served = serve(volunteer, workflow)
        assert api_vote(volunteer, workflow, served["subject"], served["ticket"]).status_code == 201


@pytest.mark.parametrize("backend", ["locmem", "redis"])
def test_the_limiter_counts_exactly_in_any_cache_backend(settings, backend):
    prefix = f"skyvote-test-{uuid.uuid4().hex}"
    if backend == "redis":
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            client.ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("no Redis at 127.0.0.1:6379")
        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        }
    else:
        cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": prefix}
    settings.CACHES = {"default": {**cache, "KEY_PREFIX": prefix}}
    try:
        allowed = []

        def hammer():
            for _ in range(10):
                allowed.append(ratelimit.hit("test", "one-client", 25, 86_400)[0])

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert allowed.count(True) == 25 and len(allowed) == 60
        assert ratelimit.hit("test", "another-client", 25, 86_400)[0]
    finally:
        if backend == "redis":
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)


def test_task_links_count_in_the_shared_limiter(settings, monkeypatch):
    from panels import services as tasklinks

    seen = []
    real_hit = ratelimit.hit
    monkeypatch.setattr(ratelimit, "hit", lambda *args: seen.append(args) or real_hit(*args))
    scope = f"worker-{uuid.uuid4().hex}"
    assert [tasklinks.allow_request(scope, (2, 86_400)) for _ in range(3)] == [True, True, False]
    assert len(seen) == 3 and all(args[0] == f"tasklinks:{scope}" for args in seen)


# ---------------------------------------------------------------------------------------------
# Races (PostgreSQL)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_gold_vote_store_one_vote_and_reveal_the_answer_once(workflow):
    (g,) = gold_subjects(workflow, 1)
    volunteer = Participant.objects.create(kind=Participant.ANONYMOUS)
    ticket = ticket_for(workflow, g, volunteer)
    key = uuid.uuid4()
    n = 10
    barrier = threading.Barrier(n)
    results, errors = [], []

    def cast(i):
        try:
            barrier.wait()
            results.append(
                record_vote(
                    workflow=workflow,
                    subject_id=g.pk,
                    participant=volunteer,
                    answer="bogus",
                    # Half retry the same request, half press again (a new key): one vote either way.
                    idempotency_key=key if i % 2 else uuid.uuid4(),
                    ticket=ticket,
                )
            )
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=cast, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors, errors
    assert Vote.objects.count() == 1 and len({r.vote.pk for r in results}) == 1
    assert [bool(r.feedback) for r in results].count(True) == 1
    assert sum(r.created for r in results) == 1
    skill = ParticipantSkill.objects.get(participant=volunteer)
    assert (skill.n_gold, skill.n_gold_correct) == (1, 1)
