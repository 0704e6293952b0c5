"""Types (follow-up answers) in aggregation: the incremental type posterior on every vote, K-class
Dawid–Skene at the recompute, retirement that waits for the type, and the volunteers' heat maps."""

import uuid

import numpy as np
import pytest
from django.template.defaultfilters import floatformat
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from core import followups, workflows
from core.models import Participant, Subject, Workflow
from labeling import retirement
from labeling.aggregation import TYPE_MIN_VOTES, TYPE_PRIOR_ACCURACY, decided_type, type_posterior
from labeling.models import ParticipantSkill, Vote
from labeling.recompute import recompute_workflow
from labeling.selection import ticket_for
from labeling.services import record_vote, undo_vote

BOGUS_TYPES = ["cosmic_ray", "ghost", "hot_pixel"]
REAL_TYPES = ["variable_star", "moving_object"]
CLASSES = BOGUS_TYPES + REAL_TYPES


def typed_workflow(workflow, **fields):
    """The fixture's workflow with a "What kind?" after real and after bogus, both asked."""
    workflow.followups = followups.validate(
        [
            {"answer": "bogus", "mode": "optional", "types": BOGUS_TYPES},
            {"answer": "real", "mode": "optional", "types": REAL_TYPES},
        ],
        workflow.answers,
    )
    workflow.retirement_rule = Workflow.RULE_COUNT
    workflow.retirement_limit = 1000
    workflow.max_votes = 1000
    for k, v in fields.items():
        setattr(workflow, k, v)
    workflow.save()
    return workflow


def new_subject(workflow, name="s", **kwargs):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **kwargs)


def vote(workflow, subject, answer, followup="", participant=None):
    participant = participant or Participant.objects.create(kind=Participant.ANONYMOUS)
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        followup=followup,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def vote_path(counts: dict, key: str) -> float:
    """The documented incremental rule, written out: p_k ∝ r^n_k, r = a(K − 1)/(1 − a)."""
    r = TYPE_PRIOR_ACCURACY * (len(CLASSES) - 1) / (1 - TYPE_PRIOR_ACCURACY)
    return r ** counts.get(key, 0) / sum(r ** counts.get(c, 0) for c in CLASSES)


# --- Incremental, on the vote path -----------------------------------------------------------------


@pytest.mark.django_db
def test_votes_count_their_type_and_move_the_type_posterior(workflow):
    wf = typed_workflow(workflow)
    s = new_subject(wf)
    vote(wf, s, "bogus", "cosmic_ray")
    s.refresh_from_db()
    assert s.type_counts == {"cosmic_ray": 1}
    assert set(s.type_posterior) == set(CLASSES)
    assert sum(s.type_posterior.values()) == pytest.approx(1.0)
    assert s.type_posterior["cosmic_ray"] == pytest.approx(vote_path({"cosmic_ray": 1}, "cosmic_ray"))
    assert s.decided_type == ""  # one volunteer's word never decides the type

    # Not sure, no follow-up, a skip: no type information, nothing moves.
    before = (dict(s.type_counts), dict(s.type_posterior))
    vote(wf, s, "bogus", followups.NOT_SURE)
    vote(wf, s, "bogus", "")
    vote(wf, s, "skip")
    s.refresh_from_db()
    assert (s.type_counts, s.type_posterior) == before
    assert s.vote_count == 3  # the two bogus votes without a type still count for real/bogus

    vote(wf, s, "bogus", "cosmic_ray")
    s.refresh_from_db()
    assert s.type_counts == {"cosmic_ray": 2}
    assert s.type_posterior["cosmic_ray"] == pytest.approx(vote_path({"cosmic_ray": 2}, "cosmic_ray"))
    assert s.type_posterior["cosmic_ray"] >= wf.type_confidence
    assert s.decided_type == "cosmic_ray"

    vote(wf, s, "bogus", "ghost")
    vote(wf, s, "bogus", "ghost")  # two dissents even it out and take the decision back
    s.refresh_from_db()
    assert s.type_counts == {"cosmic_ray": 2, "ghost": 2}
    assert s.type_posterior["ghost"] == pytest.approx(vote_path(s.type_counts, "ghost"))
    assert s.type_posterior["ghost"] == pytest.approx(s.type_posterior["cosmic_ray"])
    assert s.decided_type == ""


@pytest.mark.django_db
def test_undo_takes_the_type_back_out(workflow):
    wf = typed_workflow(workflow)
    s = new_subject(wf)
    volunteer = Participant.objects.create(kind=Participant.ANONYMOUS)
    vote(wf, s, "bogus", "ghost")
    s.refresh_from_db()
    one_vote = (dict(s.type_counts), dict(s.type_posterior), s.decided_type)
    result = vote(wf, s, "bogus", "ghost", participant=volunteer)
    s.refresh_from_db()
    assert s.decided_type == "ghost"

    undone = undo_vote(workflow=wf, participant=volunteer, vote_key=result.vote.idempotency_key)
    s.refresh_from_db()
    assert undone.vote.retracted
    assert (s.type_counts, s.decided_type) == (one_vote[0], one_vote[2])
    assert s.type_posterior == pytest.approx(one_vote[1])

    # The last typed vote undone: no type belief at all, as before any vote.
    last = vote(wf, new_subject(wf, "t"), "real", "variable_star", participant=volunteer)
    undo_vote(workflow=wf, participant=volunteer, vote_key=last.vote.idempotency_key)
    t = Subject.objects.get(pk=last.vote.subject_id)
    assert (t.type_counts, t.type_posterior, t.decided_type) == ({}, {}, "")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=60), st.integers(2, 12))
def test_incremental_type_posterior_sums_to_one_and_follows_the_counts(said, k):
    classes = [f"t{i}" for i in range(k)]
    counts = {}
    for i in said:
        key = classes[i % k]
        counts[key] = counts.get(key, 0) + 1
    posterior = type_posterior(counts, classes)
    assert set(posterior) == set(classes)
    assert sum(posterior.values()) == pytest.approx(1.0)
    assert all(0.0 < p <= 1.0 for p in posterior.values())
    most = max(counts.values())
    leaders = [c for c in classes if counts.get(c, 0) == most]
    top = max(posterior.values())
    assert [c for c in classes if posterior[c] == pytest.approx(top)] == leaders
    # A function of the counts: types named equally often are equally likely, more votes more likely.
    for a in classes:
        for b in classes:
            if counts.get(a, 0) > counts.get(b, 0):
                assert posterior[a] > posterior[b]
            elif counts.get(a, 0) == counts.get(b, 0):
                assert posterior[a] == pytest.approx(posterior[b])
    # One typed vote: the named type has the prior accuracy, as a new volunteer's word.
    assert type_posterior({classes[0]: 1}, classes)[classes[0]] == pytest.approx(TYPE_PRIOR_ACCURACY)
    n = len(said)
    decided = decided_type(posterior, n, 0.8)
    if decided:
        assert n >= TYPE_MIN_VOTES and leaders == [decided] and posterior[decided] >= 0.8
    elif n >= TYPE_MIN_VOTES and len(leaders) == 1:
        assert posterior[leaders[0]] < 0.8


# --- Recompute: K-class Dawid–Skene ------------------------------------------------------------------


def simulated_crowd(wf, n_subjects=30, seed=3):
    """Bogus subjects of three known types, five volunteers on each: three careful ones (90 % right,
    errors spread), one who calls every cosmic ray a ghost, and one who picks a bogus type at random.
    Stored as vote rows, as record_vote stores them."""
    rng = np.random.default_rng(seed)
    truth = [BOGUS_TYPES[i % 3] for i in range(n_subjects)]
    subjects = [new_subject(wf, f"s{i}") for i in range(n_subjects)]
    volunteers = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(5)]
    rows = []
    for s, t in zip(subjects, truth, strict=True):
        for v, volunteer in enumerate(volunteers):
            if v < 3:
                said = t if rng.random() < 0.9 else str(rng.choice([b for b in BOGUS_TYPES if b != t]))
            elif v == 3:
                said = "ghost" if t == "cosmic_ray" else t
            else:
                said = str(rng.choice(BOGUS_TYPES))
            rows.append(Vote(workflow=wf, subject=s, participant=volunteer, answer="bogus", followup=said))
    Vote.objects.bulk_create(rows)
    return subjects, truth, volunteers


@pytest.fixture
def crowd(workflow):
    wf = typed_workflow(workflow)
    subjects, truth, volunteers = simulated_crowd(wf)
    return wf, subjects, truth, volunteers


@pytest.mark.django_db
def test_recompute_writes_k_class_posteriors_and_recovers_the_confusion(crowd):
    wf, subjects, truth, volunteers = crowd
    summary = recompute_workflow(wf.pk, method="dawid_skene", reevaluate=False)
    assert summary.n_typed_votes == 5 * len(subjects)

    right = 0
    for s, t in zip(subjects, truth, strict=True):
        s.refresh_from_db()
        assert set(s.type_posterior) == set(CLASSES)
        assert sum(s.type_posterior.values()) == pytest.approx(1.0)
        assert sum(s.type_counts.values()) == 5
        right += max(s.type_posterior, key=s.type_posterior.get) == t
        if s.decided_type:
            assert s.type_posterior[s.decided_type] >= wf.type_confidence
    assert right >= 0.95 * len(subjects)

    skills = {k.participant_id: k for k in ParticipantSkill.objects.filter(workflow=wf)}
    i = {c: CLASSES.index(c) for c in CLASSES}
    for v in volunteers:
        matrix = np.array(skills[v.pk].type_confusion["matrix"])
        assert skills[v.pk].type_confusion["classes"] == CLASSES
        assert matrix.shape == (len(CLASSES), len(CLASSES))
        assert np.allclose(matrix.sum(axis=1), 1.0)
        seen = dict(zip(CLASSES, skills[v.pk].type_confusion["seen"], strict=True))
        assert sum(seen.values()) == pytest.approx(len(subjects), abs=0.01)  # one vote on each subject
        assert seen["variable_star"] < 0.5 and seen["hot_pixel"] > 0.5  # only bogus subjects here
    for v in volunteers[:3]:  # careful volunteers: the heat sits on the diagonal
        matrix = np.array(skills[v.pk].type_confusion["matrix"])
        assert all(matrix[i[b], i[b]] > 0.7 for b in BOGUS_TYPES)
    confuser = np.array(skills[volunteers[3].pk].type_confusion["matrix"])
    assert confuser[i["cosmic_ray"], i["ghost"]] > 0.7 and confuser[i["cosmic_ray"], i["cosmic_ray"]] < 0.2
    assert confuser[i["hot_pixel"], i["hot_pixel"]] > 0.7
    guesser = np.array(skills[volunteers[4].pk].type_confusion["matrix"])
    assert all(guesser[i[b], i[b]] < 0.7 for b in BOGUS_TYPES)


@pytest.mark.django_db
def test_majority_recompute_gives_vote_shares_and_gold_types_anchor_dawid_skene(
    crowd, django_capture_on_commit_callbacks
):
    from io import StringIO

    from django.core.management import call_command

    from jobs.models import Job
    from labeling.jobs import request_aggregation

    wf, subjects, truth, volunteers = crowd
    out = StringIO()
    call_command("aggregate", "--workflow", wf.slug, "--method", "majority", "--no-retire", stdout=out)
    assert f"typed votes (follow-up types): {5 * len(subjects)}" in out.getvalue()
    s = Subject.objects.get(pk=subjects[0].pk)
    said = list(Vote.objects.filter(subject=s).values_list("followup", flat=True))
    assert s.type_posterior == pytest.approx({c: said.count(c) / len(said) for c in CLASSES})

    # An expert's subtype clamps the subject's type, whatever its votes say.
    wrong = next(b for b in BOGUS_TYPES if b != truth[0])
    Subject.objects.filter(pk=s.pk).update(gold_label="bogus", gold_subtype=wrong)
    with django_capture_on_commit_callbacks(execute=True):  # the background job, run on commit
        job = request_aggregation(wf)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED and job.params["result"]["n_typed_votes"] == 5 * len(subjects)
    s.refresh_from_db()
    assert s.type_posterior[wrong] == pytest.approx(1.0)
    assert s.decided_type == wrong


@pytest.mark.django_db
def test_recompute_keeps_the_type_of_a_subject_voted_on_meanwhile(workflow, monkeypatch):
    wf = typed_workflow(workflow)
    a, b = new_subject(wf, "a"), new_subject(wf, "b")
    for _ in range(2):
        vote(wf, a, "bogus", "ghost")
        vote(wf, b, "bogus", "hot_pixel")

    import labeling.recompute as recompute

    real_arrays = recompute.type_vote_arrays

    def snapshot_then_vote(*args):
        arrays = real_arrays(*args)
        vote(wf, a, "bogus", "cosmic_ray")  # arrives while the recompute runs
        return arrays

    monkeypatch.setattr(recompute, "type_vote_arrays", snapshot_then_vote)
    summary = recompute.recompute_workflow(wf.pk, method="dawid_skene", reevaluate=False)
    a.refresh_from_db()
    b.refresh_from_db()
    assert summary.n_kept_newer_types == 1
    assert a.type_counts == {"ghost": 2, "cosmic_ray": 1}  # its incremental state, with the newer vote
    assert a.type_posterior["ghost"] == pytest.approx(vote_path(a.type_counts, "ghost"))
    assert b.type_posterior["hot_pixel"] != pytest.approx(vote_path(b.type_counts, "hot_pixel"))  # DS
    assert b.decided_type == "hot_pixel"


# --- Retirement --------------------------------------------------------------------------------------


def swap_workflow(workflow, **fields):
    rule = {
        "retirement_rule": Workflow.RULE_SWAP,
        "swap_prior": 0.5,
        "swap_p_low": 0.2,
        "swap_p_high": 0.99,
        "min_votes": 2,
        "max_votes": 5,
    }
    return typed_workflow(workflow, **{**rule, **fields})


@pytest.mark.django_db
def test_without_type_retirement_a_decided_subject_retires_as_before(workflow):
    wf = swap_workflow(workflow)
    s = new_subject(wf)
    vote(wf, s, "bogus", "ghost")
    assert vote(wf, s, "bogus", "cosmic_ray").retired_now  # two bogus votes: P(real) 0.155
    s.refresh_from_db()
    assert s.retired_reason.startswith("swap: bogus") and "type" not in s.retired_reason


@pytest.mark.django_db
def test_type_retirement_waits_for_the_type_or_max_votes(client, owner, workflow):
    wf = swap_workflow(workflow, type_retirement=True)
    s = new_subject(wf, "a")
    vote(wf, s, "bogus", "ghost")
    assert not vote(wf, s, "bogus", "cosmic_ray").retired_now  # P(real) decided, the type not
    assert not vote(wf, s, "bogus").retired_now  # no type: nothing to decide it with
    assert not vote(wf, s, "bogus", "hot_pixel").retired_now  # three types, once each
    assert vote(wf, s, "bogus").retired_now  # 5 votes = max_votes: retires all the same
    s.refresh_from_db()
    assert s.status == Subject.RETIRED and not s.needs_review
    assert s.retired_reason == "swap: bogus, type undecided after 5 votes"

    t = new_subject(wf, "b")
    vote(wf, t, "bogus", "hot_pixel")
    assert vote(wf, t, "bogus", "hot_pixel").retired_now
    t.refresh_from_db()
    assert t.decided_type == "hot_pixel"
    assert t.retired_reason == "swap: bogus, type hot_pixel after 2 votes"
    client.force_login(owner)
    review = client.get(reverse("labeling:crowd_review", args=[wf.project.slug, wf.slug])).content.decode()
    row = review[review.index("<td>b</td>") :].split("</tr>")[0]
    assert f"<td>{followups.type_labels(wf.followups)['hot_pixel']}</td>" in row

    # A type of the other side does not describe the decision: the subject waits.
    u = new_subject(wf, "c")
    for _ in range(2):
        vote(wf, u, "bogus")
    Subject.objects.filter(pk=u.pk).update(
        type_counts={"variable_star": 2}, type_posterior=type_posterior({"variable_star": 2}, CLASSES)
    )
    u.refresh_from_db()
    assert retirement.subject_type(u, wf) == "variable_star"
    assert retirement.subject_type(u, wf, Subject.BOGUS) == ""
    assert retirement.decision(u, wf) is None


@pytest.mark.django_db
def test_count_rule_waits_past_its_limit_for_the_type(workflow):
    wf = typed_workflow(workflow, retirement_limit=2, max_votes=4, type_retirement=True)
    s = new_subject(wf, "a")
    vote(wf, s, "real", "variable_star")
    assert not vote(wf, s, "real", "moving_object").retired_now  # the limit, but no type yet
    assert not vote(wf, s, "real").retired_now
    assert vote(wf, s, "real").retired_now  # max_votes
    s.refresh_from_db()
    assert s.retired_reason == "count: real, type undecided after 4 votes"
    t = new_subject(wf, "b")
    vote(wf, t, "real", "moving_object")
    assert not vote(wf, t, "real", "variable_star").retired_now
    assert vote(wf, t, "real", "moving_object").retired_now  # 2 of 3 typed: decided
    t.refresh_from_db()
    assert t.type_posterior["moving_object"] == pytest.approx(vote_path(t.type_counts, "moving_object"))
    assert t.retired_reason == "count: real, type moving_object after 3 votes"


@pytest.mark.django_db
def test_recompute_decides_the_type_and_reevaluation_retires(workflow):
    wf = swap_workflow(workflow, type_retirement=True, type_confidence=0.9, max_votes=20)
    s = new_subject(wf)
    a, b, odd = (Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(3))
    for p, said in zip((a, odd, b), ["ghost", "cosmic_ray", "ghost"], strict=True):
        vote(wf, s, "bogus", said, participant=p)
    s.refresh_from_db()
    assert s.type_posterior["ghost"] == pytest.approx(vote_path(s.type_counts, "ghost"))
    assert s.status == Subject.ACTIVE and s.decided_type == ""  # 2 of 3: under 0.9 on the vote path
    # Elsewhere the two agree about ghosts and the odd one out is always wrong: Dawid–Skene learns it.
    for i in range(6):
        other = new_subject(wf, f"o{i}")
        for p, said in ((a, "ghost"), (b, "ghost"), (odd, "hot_pixel")):
            Vote.objects.create(workflow=wf, subject=other, participant=p, answer="bogus", followup=said)
    summary = recompute_workflow(wf.pk, method="dawid_skene", reevaluate=True)
    s.refresh_from_db()
    assert s.decided_type == "ghost"
    assert s.status == Subject.RETIRED and s.retired_reason == "swap: bogus, type ghost after 3 votes"
    assert summary.retirement["retired"] >= 1


# --- Settings and the volunteer page -----------------------------------------------------------------


@pytest.mark.django_db
def test_type_retirement_settings_are_editable_on_the_api_and_the_pages(client, owner, workflow):
    typed_workflow(workflow)
    client.force_login(owner)
    api = reverse("api_workflow", args=[workflow.project.slug, workflow.pk])
    body = {"type_retirement": True, "type_confidence": 0.9}
    assert client.patch(api, body, content_type="application/json").status_code == 200
    workflow.refresh_from_db()
    assert workflow.type_retirement and workflow.type_confidence == 0.9
    resp = client.patch(api, {"type_confidence": 0.3}, content_type="application/json")
    assert resp.status_code == 400 and "type_confidence" in resp.json()
    with pytest.raises(workflows.BuilderError):
        workflows.update_workflow(workflow, type_confidence=1.5)

    # The crowd retirement page: saved with the rule (and the active subjects re-evaluated).
    page = reverse("labeling:crowd_retirement", args=[workflow.project.slug, workflow.slug])
    assert 'name="type_confidence"' in client.get(page).content.decode()
    form = {
        "retirement_rule": "swap", "retirement_limit": 5, "min_votes": 2, "max_votes": 20, "swap_prior": 0.5,
        "swap_p_low": 0.01, "swap_p_high": 0.99, "consensus_fraction": 0.8,
        "gold_schedule": "[[20, 0.4], [null, 0.1]]", "type_confidence": 0.85,
    }  # fmt: skip
    assert client.post(page, form).status_code == 302
    workflow.refresh_from_db()
    assert not workflow.type_retirement and workflow.type_confidence == 0.85  # unticked box: off
    resp = client.post(page, {**form, "type_retirement": "on", "type_confidence": 0.2})
    assert resp.status_code == 400
    assert Workflow.objects.get(pk=workflow.pk).type_confidence == 0.85
    assert client.post(page, {**form, "type_retirement": "on"}).status_code == 302
    assert Workflow.objects.get(pk=workflow.pk).type_retirement


@pytest.mark.django_db
def test_volunteer_page_shows_type_confusion_heat_maps_after_a_recompute(client, owner, crowd):
    wf, subjects, truth, volunteers = crowd
    page = reverse("labeling:crowd_volunteers", args=[wf.project.slug, wf.slug])
    ParticipantSkill.objects.bulk_create(
        [ParticipantSkill(workflow=wf, participant=v, n_votes=1) for v in volunteers]
    )
    client.force_login(owner)
    assert 'data-testid="type-confusion"' not in client.get(page).content.decode()  # no recompute yet

    recompute_workflow(wf.pk, method="dawid_skene", reevaluate=False)
    html = client.get(page).content.decode()
    assert html.count('data-testid="type-confusion"') == len(volunteers)
    skill = ParticipantSkill.objects.get(workflow=wf, participant=volunteers[3])
    table = html.split(f"<caption><code>{wf.project.pseudonym(volunteers[3].pk)}</code></caption>")[1]
    table = table.split("</table>")[0]
    labels = followups.type_labels(wf.followups)
    assert all(f"{n}. {labels[c]}</th>" in table for n, c in enumerate(CLASSES, start=1))
    assert f'scope="col"><abbr title="{labels["ghost"]}">2</abbr>' in table
    p = skill.type_confusion["matrix"][0][1]  # true cosmic ray, said ghost
    assert f"true {labels['cosmic_ray']}, said {labels['ghost']}: {floatformat(p, 2)}" in table
    assert f'class="heat-{round(p * 10)}"' in table
    # Real types: none of these volunteers has met one, so those rows show no (prior) numbers.
    row = table.split(f"5. {labels['moving_object']}</th>")[1].split("</tr>")[0]
    assert "not seen yet" in row and "heat-" not in row
    assert "not seen yet" not in table.split(f"1. {labels['cosmic_ray']}</th>")[1].split("</tr>")[0]

    # The heat maps come with the skill rows: more volunteers, not more queries.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as before:
        client.get(page)
    ParticipantSkill.objects.bulk_create(
        [
            ParticipantSkill(
                workflow=wf,
                participant=Participant.objects.create(kind=Participant.ANONYMOUS),
                n_votes=1,
                type_confusion=skill.type_confusion,
            )
            for _ in range(4)
        ]
    )
    with CaptureQueriesContext(connection) as after:
        html = client.get(page).content.decode()
    assert html.count('data-testid="type-confusion"') == len(volunteers) + 4
    assert len(after.captured_queries) == len(before.captured_queries)

    # A workflow whose types were all removed shows no heat map, whatever the skill rows hold.
    Workflow.objects.filter(pk=wf.pk).update(followups=[])
    assert 'data-testid="type-confusion"' not in client.get(page).content.decode()
