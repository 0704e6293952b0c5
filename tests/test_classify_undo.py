"""Undo of the last answer and skipped subjects that come back, through the Django test client and the
vote services: counts, P(real), skill and retirement stay what they would be without the retracted vote."""

import random
import re
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.models import Participant, Project, Subject, Workflow
from labeling import recompute, retirement
from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
from labeling.exporters import export_votes
from labeling.models import ParticipantSkill, Vote, VoteRetraction
from labeling.selection import n_answered, ticket_for
from labeling.services import UndoError, record_vote, undo_vote
from mlcore import aggregation as crowd

pytestmark = pytest.mark.django_db


def classify_url(workflow):
    return reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])


def vote_url(workflow):
    return reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])


def undo_url(workflow):
    return reverse("labeling:undo_vote", args=[workflow.project.slug, workflow.slug])


def form_of(html: str) -> dict:
    """What the page's vote form sends: the subject, its ticket and the vote's key."""
    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
        for name in ("subject", "ticket", "key")
    }


def undo_key(html: str) -> str | None:
    """The key of the vote the page's Undo button takes back (None: no button)."""
    found = re.search(r'name="vote" value="([^"]*)"', html)
    return found.group(1) if found else None


def answer(client, workflow, html, value):
    return client.post(vote_url(workflow), {**form_of(html), "answer": value}, HTTP_HX_REQUEST="true")


def counter(html: str) -> int:
    return int(re.search(r'data-testid="counter">(\d+)<', html).group(1))


@pytest.fixture
def subjects(project, workflow):
    def make(n, gold=()):
        return [
            Subject.objects.create(
                project=project,
                workflow=workflow,
                external_id=f"s{i}",
                gold_label=gold[i] if i < len(gold) else "",
                random_key=random.random(),
            )
            for i in range(n)
        ]

    return make


def vote(workflow, subject, participant, value):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=value,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def undo(workflow, participant, result):
    return undo_vote(workflow=workflow, participant=participant, vote_key=result.vote.idempotency_key)


def standing_counts(subject: Subject) -> tuple[int, dict]:
    answers = list(
        Vote.objects.filter(subject=subject, retracted=False)
        .exclude(answer="skip")
        .values_list("answer", flat=True)
    )
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    return len(answers), counts


# ---------------------------------------------------------------------------------------------
# Undo through the page


def test_undo_returns_to_the_same_subject_with_a_new_ticket_and_the_new_answer_counts_once(
    client, workflow, make_subjects
):
    make_subjects(3)
    page = client.get(classify_url(workflow)).content.decode()
    assert undo_key(page) is None  # nothing answered yet: no Undo button
    first = form_of(page)
    after = answer(client, workflow, page, "real").content.decode()
    assert counter(after) == 1
    stored = Vote.objects.get()
    assert undo_key(after) == str(stored.idempotency_key)
    assert 'data-testid="undo"' in after and "<kbd>U</kbd>" in after

    back = client.post(
        undo_url(workflow), {**form_of(after), "vote": undo_key(after)}, HTTP_HX_REQUEST="true"
    )
    html = back.content.decode()
    assert back.status_code == 200 and html.lstrip().startswith('<section id="task"')
    again = form_of(html)
    assert again["subject"] == first["subject"] and again["ticket"] != first["ticket"]
    assert counter(html) == 0 and undo_key(html) is None  # one step: nothing more to undo now
    stored.refresh_from_db()
    assert stored.retracted
    retraction = VoteRetraction.objects.get(vote=stored)
    assert retraction.reason == VoteRetraction.UNDO and retraction.participant_id == stored.participant_id
    subject = Subject.objects.get(pk=first["subject"])
    assert (subject.vote_count, subject.answer_counts, subject.p_real, subject.aggregation_method) == (
        0,
        {},
        None,
        "",
    )
    skill = ParticipantSkill.objects.get(workflow=workflow, participant_id=stored.participant_id)
    assert skill.n_votes == 0

    changed = answer(client, workflow, html, "bogus").content.decode()
    assert counter(changed) == 1
    rows = Vote.objects.filter(subject=subject).order_by("pk")
    assert [(v.answer, v.retracted) for v in rows] == [("real", True), ("bogus", False)]
    subject.refresh_from_db()
    assert (subject.vote_count, subject.answer_counts) == (1, {"bogus": 1})
    assert subject.p_real == pytest.approx(0.3)  # one bogus from 0.5 with P_L = P_D = 0.7
    assert n_answered(workflow, rows[0].participant) == 1


def test_undo_without_javascript_redirects_and_serves_the_subject_again(client, workflow, make_subjects):
    make_subjects(4)
    page = client.get(classify_url(workflow)).content.decode()
    shown = form_of(page)["subject"]
    client.post(vote_url(workflow), {**form_of(page), "answer": "bogus"})
    key = str(Vote.objects.get().idempotency_key)
    response = client.post(undo_url(workflow), {"vote": key})
    assert response.status_code == 302 and response["Location"] == classify_url(workflow)
    assert form_of(client.get(classify_url(workflow)).content.decode())["subject"] == shown
    assert Vote.objects.get().retracted


def test_a_standing_vote_stays_unique_per_participant_and_subject(workflow, subjects):
    (s,) = subjects(1)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    first = vote(workflow, s, p, "real")
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(workflow=workflow, subject=s, participant=p, answer="bogus")
    undo(workflow, p, first)
    Vote.objects.create(workflow=workflow, subject=s, participant=p, answer="bogus")  # fine once retracted
    assert Vote.objects.filter(subject=s).count() == 2


# ---------------------------------------------------------------------------------------------
# Exactness: counts, P(real), skill and retirement as if the vote had never been made


def swap_from_standing_votes(workflow, gold: dict[int, str]):
    arrays = recompute.vote_arrays(workflow)  # standing votes only
    item_of = {pk: i for i, pk in enumerate(arrays.subject_ids)}
    voted_gold = {pk: g for pk, g in gold.items() if pk in item_of}
    result = crowd.swap(
        arrays.items,
        arrays.workers,
        arrays.labels,
        gold_items=[item_of[pk] for pk in voted_gold],
        gold_labels=[crowd.REAL if g == "real" else crowd.BOGUS for g in voted_gold.values()],
        prior=workflow.swap_prior,
        pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
        n_items=len(arrays.subject_ids),
        n_workers=len(arrays.participant_ids),
    )
    return arrays, result


def test_undone_votes_leave_counts_belief_and_skill_exactly_as_without_them(workflow, subjects):
    workflow.retirement_limit = 1000
    workflow.save()
    rng = random.Random(7)
    items = subjects(10, gold=["real", "bogus", "real", "bogus"])
    gold = {s.pk: s.gold_label for s in items if s.gold_label}
    volunteers = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(5)]
    pairs = [(s, v) for s in items for v in volunteers]
    rng.shuffle(pairs)
    last = {}
    for s, v in pairs[:36]:
        last[v.pk] = vote(workflow, s, v, rng.choice(["real", "bogus", "bogus", "real", "skip"]))
    # Everyone takes their last answer back: gold and ordinary answers, and skips.
    kinds = set()
    for v in volunteers:
        result = undo(workflow, v, last[v.pk])
        kinds.add("gold" if result.vote.was_gold else result.vote.answer)
    assert "gold" in kinds and len(kinds) >= 2
    # ... and a few answer a subject new to them afterwards, weighed with the skill the undo restored.
    for v in volunteers[:3]:
        fresh = next(s for s in items if not Vote.objects.filter(subject=s, participant=v).exists())
        vote(workflow, fresh, v, "real")

    arrays, expected = swap_from_standing_votes(workflow, gold)
    stored = dict(Subject.objects.filter(pk__in=arrays.subject_ids).values_list("pk", "p_real"))
    np.testing.assert_allclose(
        [stored[pk] for pk in arrays.subject_ids], expected.p_real, rtol=1e-9, atol=1e-12
    )
    for w, pid in enumerate(arrays.participant_ids):
        skill = ParticipantSkill.objects.get(workflow=workflow, participant_id=pid)
        assert skill.p_l == pytest.approx(expected.confusion[w, crowd.REAL, crowd.REAL], rel=1e-9)
        assert skill.p_d == pytest.approx(expected.confusion[w, crowd.BOGUS, crowd.BOGUS], rel=1e-9)
        standing = Vote.objects.filter(workflow=workflow, participant_id=pid, retracted=False).exclude(
            answer="skip"
        )
        on_gold = [v for v in standing.select_related("subject") if v.was_gold]
        assert skill.n_votes == standing.count()
        assert skill.n_gold == len(on_gold)
        assert skill.n_gold_correct == sum(bool(v.gold_correct) for v in on_gold)
        assert skill.real_seen == sum(v.subject.gold_label == "real" for v in on_gold)
        assert skill.bogus_said_bogus == sum(
            v.subject.gold_label == "bogus" and v.answer == "bogus" for v in on_gold
        )
    for s in items:
        s.refresh_from_db()
        n, counts = standing_counts(s)
        assert (s.vote_count, s.answer_counts) == (n, counts)
        if not n:
            assert s.p_real is None  # no vote left that moved it: no belief, as before any vote
    # The full recompute and its tallies see the standing votes only.
    summary = recompute.recompute_workflow(workflow.pk, method="dawid_skene", reevaluate=False)
    assert (
        summary.n_votes
        == Vote.objects.filter(workflow=workflow, retracted=False).exclude(answer="skip").count()
    )
    assert summary.n_votes < Vote.objects.filter(workflow=workflow).exclude(answer="skip").count()


def test_undo_applies_the_retirement_rule_to_what_is_left(workflow, subjects):
    workflow.retirement_rule = Workflow.RULE_CONSENSUS
    workflow.min_votes, workflow.max_votes, workflow.consensus_fraction = 3, 20, 0.8
    workflow.save()
    (s,) = subjects(1)
    voters = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(4)]
    results = [
        vote(workflow, s, p, a) for p, a in zip(voters, ["real", "real", "bogus", "real"], strict=True)
    ]
    s.refresh_from_db()
    assert s.status == Subject.ACTIVE  # 3 of 4: not a consensus of 0.8
    # Without the dissenting vote the third "real" would have retired it (3 of 3): so it does now.
    assert undo(workflow, voters[2], results[2]).retired_now
    s.refresh_from_db()
    assert s.status == Subject.RETIRED and s.retired_reason == "consensus: real 3/3"


def test_recompute_keeps_a_subject_whose_vote_was_undone_during_the_run(workflow, subjects, monkeypatch):
    workflow.retirement_limit = 1000
    workflow.save()
    a, b = subjects(2)
    voters = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(2)]
    vote(workflow, b, voters[0], "bogus")
    vote(workflow, b, voters[1], "bogus")
    vote(workflow, a, voters[0], "real")
    last = vote(workflow, a, voters[1], "real")
    real_vote_arrays = recompute.vote_arrays

    def snapshot_then_undo(wf):
        arrays = real_vote_arrays(wf)
        undo(workflow, voters[1], last)  # arrives while the recompute runs
        return arrays

    monkeypatch.setattr(recompute, "vote_arrays", snapshot_then_undo)
    summary = recompute.recompute_workflow(workflow.pk, method="majority", reevaluate=False)
    a.refresh_from_db()
    b.refresh_from_db()
    assert summary.n_kept_newer == 1
    assert a.aggregation_method == "swap" and a.p_real == pytest.approx(0.7)  # one real left, not 2 of 2
    assert b.aggregation_method == "majority"


# ---------------------------------------------------------------------------------------------
# Refusals: clear 4xx with a message, nothing changed


def test_refusals_say_why_and_change_nothing(client, workflow, make_subjects):
    make_subjects(4)
    page = client.get(classify_url(workflow)).content.decode()
    html = answer(client, workflow, page, "real").content.decode()
    first_key = undo_key(html)
    html = answer(client, workflow, html, "bogus").content.decode()
    last_key = undo_key(html)

    def refused(key, expected_status, message, who=client):
        response = who.post(undo_url(workflow), {**form_of(html), "vote": key}, HTTP_HX_REQUEST="true")
        assert response.status_code == expected_status, response.content[:300]
        body = response.content.decode()
        assert message in body and 'role="alert"' in body
        return body

    body = refused(first_key, 409, "Only your last answer can be undone.")
    assert form_of(body)["subject"] == form_of(html)["subject"]  # the same subject stays on screen
    refused("", 404, "There is no answer of yours to undo here.")
    refused("not-a-key", 404, "There is no answer of yours to undo here.")
    refused(str(uuid.uuid4()), 404, "There is no answer of yours to undo here.")
    refused(last_key, 403, "That answer is not yours to undo.", who=Client())
    Vote.objects.update(created_at=timezone.now() - timedelta(seconds=31))
    refused(last_key, 409, "Too late to undo: an answer can be undone for 30 seconds.")
    Vote.objects.update(created_at=timezone.now())
    retirement.manual_retire(Vote.objects.get(idempotency_key=last_key).subject, None)
    refused(last_key, 409, "Too late to undo: this subject has retired")
    assert not Vote.objects.filter(retracted=True).exists() and not VoteRetraction.objects.exists()


def test_an_answer_is_undone_once(workflow, subjects):
    (s,) = subjects(1)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    result = vote(workflow, s, p, "real")
    undo(workflow, p, result)
    with pytest.raises(UndoError) as refused:
        undo(workflow, p, result)
    assert refused.value.status == 409 and "already undone" in str(refused.value)
    assert VoteRetraction.objects.count() == 1
    s.refresh_from_db()
    assert s.vote_count == 0


def test_an_undo_after_the_subject_retired_is_refused(workflow, subjects):
    """Undo and retirement both lock the subject row: whichever comes second sees the other's result.
    Here a second volunteer's vote retires the subject first; the undo then changes nothing."""
    workflow.retirement_limit = 2
    workflow.save()
    (s,) = subjects(1)
    a, b = (Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(2))
    mine = vote(workflow, s, a, "real")
    assert vote(workflow, s, b, "real").retired_now
    with pytest.raises(UndoError) as refused:
        undo(workflow, a, mine)
    assert refused.value.status == 409
    s.refresh_from_db()
    assert (s.vote_count, s.status) == (2, Subject.RETIRED) and not Vote.objects.filter(
        retracted=True
    ).exists()


def test_undo_in_a_paused_project_is_refused_with_the_closed_page(client, workflow, make_subjects):
    make_subjects(2)
    page = client.get(classify_url(workflow)).content.decode()
    html = answer(client, workflow, page, "real").content.decode()
    Project.objects.filter(pk=workflow.project_id).update(status="paused", status_changed_at=timezone.now())
    response = client.post(undo_url(workflow), {"vote": undo_key(html)}, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert not Vote.objects.get().retracted


def test_outsiders_of_a_private_project_get_404_on_undo(client, workflow, make_subjects, django_user_model):
    make_subjects(1)
    page = client.get(classify_url(workflow)).content.decode()
    html = answer(client, workflow, page, "real").content.decode()
    Project.objects.filter(pk=workflow.project_id).update(is_public=False)
    rival = Client()
    rival.force_login(django_user_model.objects.create_user("rival", password="rival-pass-123"))
    for outsider in (Client(), rival):
        assert outsider.post(undo_url(workflow), {"vote": undo_key(html)}).status_code == 404
    assert not Vote.objects.get().retracted


# ---------------------------------------------------------------------------------------------
# What reads votes leaves retracted ones out


def test_exports_the_api_and_my_page_leave_undone_votes_out(client, owner, workflow, make_subjects, tmp_path):
    import csv

    make_subjects(3)
    page = client.get(classify_url(workflow)).content.decode()
    html = answer(client, workflow, page, "real").content.decode()
    html = answer(client, workflow, html, "bogus").content.decode()
    client.post(undo_url(workflow), {**form_of(html), "vote": undo_key(html)}, HTTP_HX_REQUEST="true")
    assert Vote.objects.count() == 2 and Vote.objects.filter(retracted=True).count() == 1

    path = tmp_path / "votes.csv"
    export_votes(workflow.project, path, "csv")
    with open(path) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [r["answer"] for r in rows] == ["real"]

    me = client.get(reverse("core:me")).content.decode()
    assert f"<td>{workflow.name}</td><td>1</td>" in me  # one classification, not two
    assert "<td>real</td>" in me and "<td>bogus</td>" not in me  # the undone answer is not among mine

    api = Client()
    api.force_login(owner)
    listed = api.get(f"/api/projects/{workflow.project.slug}/votes/").json()
    assert [v["answer"] for v in listed["results"]] == ["real"]


def test_a_login_moves_undone_and_standing_votes_of_the_same_subject(
    client, workflow, make_subjects, django_user_model
):
    from labeling.participants import merge_anonymous_into_user

    (s,) = make_subjects(1)
    anonymous = Participant.objects.create(kind=Participant.ANONYMOUS)
    undo(workflow, anonymous, vote(workflow, s, anonymous, "real"))
    vote(workflow, s, anonymous, "bogus")
    target = merge_anonymous_into_user(
        anonymous, django_user_model.objects.create_user("v", password="v-pass-1234")
    )
    assert Vote.objects.filter(participant=target).count() == 2
    assert Vote.objects.get(participant=target, retracted=False).answer == "bogus"


# ---------------------------------------------------------------------------------------------
# Skipped subjects come back


def test_a_skipped_subject_comes_back_when_the_pool_runs_out_and_counts_once(client, workflow, make_subjects):
    workflow.retirement_limit = 10
    workflow.save()
    make_subjects(3)
    html = client.get(classify_url(workflow)).content.decode()
    skipped = form_of(html)["subject"]
    html = answer(client, workflow, html, "skip").content.decode()
    served = []
    for _ in range(2):
        served.append(form_of(html)["subject"])
        html = answer(client, workflow, html, "real").content.decode()
    assert skipped not in served
    assert form_of(html)["subject"] == skipped  # nothing else left: the skip comes back
    html = answer(client, workflow, html, "bogus").content.decode()
    assert "You have finished this workflow" in html and counter(html) == 3

    subject = Subject.objects.get(pk=skipped)
    assert (subject.vote_count, subject.answer_counts) == (1, {"bogus": 1})
    rows = list(Vote.objects.filter(subject=subject).order_by("pk"))
    assert [(v.answer, v.retracted) for v in rows] == [("skip", True), ("bogus", False)]
    assert rows[0].retraction.reason == VoteRetraction.REPLACED
    assert n_answered(workflow, rows[1].participant) == 3  # the replaced skip is not counted twice


def test_a_skipped_subject_comes_back_after_enough_other_answers(client, settings, workflow, make_subjects):
    settings.SKYVOTE_SKIP_RETURN_AFTER = 2
    make_subjects(6)
    html = client.get(classify_url(workflow)).content.decode()
    skipped = form_of(html)["subject"]
    html = answer(client, workflow, html, "skip").content.decode()
    html = answer(client, workflow, html, "real").content.decode()
    assert form_of(html)["subject"] != skipped  # one answer since: not yet
    html = answer(client, workflow, html, "real").content.decode()
    assert form_of(html)["subject"] == skipped  # two: back, although three others are left


def test_a_subject_skipped_again_stays_skipped(client, workflow, make_subjects):
    make_subjects(2)
    html = client.get(classify_url(workflow)).content.decode()
    skipped = form_of(html)["subject"]
    html = answer(client, workflow, html, "skip").content.decode()
    html = answer(client, workflow, html, "real").content.decode()
    assert form_of(html)["subject"] == skipped
    html = answer(client, workflow, html, "skip").content.decode()
    assert "You have finished this workflow" in html
    assert list(
        Vote.objects.filter(subject_id=skipped).values_list("answer", "retracted").order_by("pk")
    ) == [
        ("skip", True),
        ("skip", False),
    ]


def test_a_retired_skipped_subject_does_not_come_back(client, workflow, make_subjects):
    make_subjects(2)
    html = client.get(classify_url(workflow)).content.decode()
    skipped = form_of(html)["subject"]
    html = answer(client, workflow, html, "skip").content.decode()
    retirement.manual_retire(Subject.objects.get(pk=skipped), None)
    html = answer(client, workflow, html, "real").content.decode()
    assert "You have finished this workflow" in html


def test_an_undone_gold_answer_is_not_a_gold_check_the_second_time(client, workflow, make_subjects):
    subjects = make_subjects(2)
    Subject.objects.filter(pk__in=[s.pk for s in subjects]).update(
        gold_label="real", gold_subtype="variable_star"
    )
    page = client.get(classify_url(workflow)).content.decode()
    html = answer(client, workflow, page, "bogus").content.decode()
    assert "Not quite." in html and f'data-feedback-for="{form_of(page)["subject"]}"' in html
    first = Vote.objects.get()
    skill = ParticipantSkill.objects.get(participant_id=first.participant_id)
    assert (skill.n_gold, skill.bogus_seen, skill.real_seen) == (1, 0, 1)

    html = client.post(undo_url(workflow), {"vote": undo_key(html)}, HTTP_HX_REQUEST="true").content.decode()
    assert form_of(html)["subject"] == form_of(page)["subject"]
    skill.refresh_from_db()
    assert (skill.n_gold, skill.real_seen, skill.p_l, skill.p_d) == (0, 0, 0.7, 0.7)

    html = answer(client, workflow, html, "real").content.decode()  # knowing the answer now
    assert 'data-testid="feedback"' not in html
    again = Vote.objects.get(retracted=False)
    assert not again.was_gold and again.gold_correct is None
    skill.refresh_from_db()
    assert (skill.n_gold, skill.n_gold_correct, skill.n_votes) == (0, 0, 1)
