"""Incremental SWAP belief and volunteer skill on every vote; the full recompute replaces them."""

import random
import uuid

import numpy as np
import pytest

from core.models import Participant, Subject, Workflow
from jobs.models import Job
from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
from labeling.models import ParticipantSkill, Vote
from labeling.recompute import recompute_workflow, vote_arrays
from labeling.selection import ticket_for
from labeling.services import VoteError, record_vote
from mlcore import aggregation as crowd

pytestmark = pytest.mark.django_db


@pytest.fixture
def subjects(project, workflow):
    def make(n, gold=()):
        out = []
        for i in range(n):
            out.append(
                Subject.objects.create(
                    project=project,
                    workflow=workflow,
                    external_id=f"s{i}",
                    gold_label=gold[i] if i < len(gold) else "",
                    random_key=random.random(),
                )
            )
        return out

    return make


def vote(workflow, subject, participant, answer):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def test_new_volunteer_starts_better_than_chance(workflow, subjects):
    workflow.retirement_limit = 100
    workflow.save()
    (s,) = subjects(1)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    vote(workflow, s, p, "real")
    s.refresh_from_db()
    # Prior 0.5 and P_L = P_D = 0.7: one "real" moves P(real) to 0.7, no further.
    assert s.p_real == pytest.approx(0.7)
    assert s.aggregation_method == "swap"
    skill = ParticipantSkill.objects.get(workflow=workflow, participant=p)
    assert (skill.n_votes, skill.n_gold, skill.p_l, skill.p_d) == (1, 0, 0.7, 0.7)


def test_gold_answers_train_the_skill_and_then_move_posteriors(workflow, subjects):
    workflow.retirement_limit = 100
    workflow.save()
    gold = subjects(4, gold=["real", "real", "bogus", "bogus"])
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    for s, answer in zip(gold, ["real", "real", "bogus", "real"], strict=True):
        result = vote(workflow, s, p, answer)
        assert result.vote.was_gold
    skill = ParticipantSkill.objects.get(workflow=workflow, participant=p)
    assert (skill.real_seen, skill.real_said_real, skill.bogus_seen, skill.bogus_said_bogus) == (2, 2, 2, 1)
    assert (skill.n_gold, skill.n_gold_correct) == (4, 3)
    assert skill.p_l == pytest.approx(
        crowd.swap_skill(2, 2, 2, 1, pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS)[0]
    )
    assert skill.p_d == pytest.approx(
        crowd.swap_skill(2, 2, 2, 1, pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS)[1]
    )
    ordinary = Subject.objects.create(project=workflow.project, workflow=workflow, external_id="o")
    vote(workflow, ordinary, p, "real")
    ordinary.refresh_from_db()
    assert ordinary.p_real == pytest.approx(crowd.swap_update(0.5, True, skill.p_l, skill.p_d))
    assert ordinary.p_real > 0.5


def test_incremental_state_equals_mlcore_swap_played_vote_by_vote(workflow, subjects):
    workflow.retirement_limit = 1000
    workflow.save()
    rng = random.Random(3)
    items = subjects(12, gold=["real", "bogus", "real", "bogus"])
    volunteers = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(6)]
    accuracy = [0.95, 0.9, 0.8, 0.6, 0.5, 0.99]
    truth = {s.pk: s.gold_label or rng.choice(["real", "bogus"]) for s in items}
    pairs = [(s, v) for s in items for v in range(len(volunteers))]
    rng.shuffle(pairs)
    for s, v in pairs[:50]:
        right = rng.random() < accuracy[v]
        answer = truth[s.pk] if right else ("bogus" if truth[s.pk] == "real" else "real")
        vote(workflow, s, volunteers[v], answer)

    arrays = vote_arrays(workflow)
    gold = {s.pk: s.gold_label for s in items if s.gold_label}
    expected = crowd.swap(
        arrays.items,
        arrays.workers,
        arrays.labels,
        gold_items=[arrays.subject_ids.index(pk) for pk in gold],
        gold_labels=[crowd.REAL if g == "real" else crowd.BOGUS for g in gold.values()],
        prior=workflow.swap_prior,
        pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
        n_items=len(arrays.subject_ids),
        n_workers=len(arrays.participant_ids),
    )
    stored = dict(Subject.objects.filter(pk__in=arrays.subject_ids).values_list("pk", "p_real"))
    got = np.array([stored[pk] for pk in arrays.subject_ids])
    np.testing.assert_allclose(got, expected.p_real, rtol=1e-9, atol=1e-12)
    for w, pid in enumerate(arrays.participant_ids):
        skill = ParticipantSkill.objects.get(workflow=workflow, participant_id=pid)
        assert skill.p_l == pytest.approx(expected.confusion[w, crowd.REAL, crowd.REAL])
        assert skill.p_d == pytest.approx(expected.confusion[w, crowd.BOGUS, crowd.BOGUS])


def test_skip_changes_neither_belief_nor_skill(workflow, subjects):
    (s,) = subjects(1, gold=["real"])
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    vote(workflow, s, p, "skip")
    s.refresh_from_db()
    assert s.p_real is None
    assert not ParticipantSkill.objects.filter(participant=p).exists()


def test_similarity_workflow_votes_leave_p_real_alone(project):
    wf = Workflow.objects.create(
        project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY, answers=["real", "bogus"]
    )
    s = Subject.objects.create(project=project, workflow=wf, external_id="x")
    # A real/bogus vote is refused outright by a similarity workflow (tests/test_security_votes.py).
    with pytest.raises(VoteError, match="similar"):
        vote(wf, s, Participant.objects.create(kind=Participant.ANONYMOUS), "real")
    s.refresh_from_db()
    assert s.p_real is None and not Vote.objects.filter(subject=s).exists()


def test_recompute_replaces_incremental_state_with_dawid_skene(workflow, subjects):
    workflow.retirement_limit = 1000
    workflow.save()
    items = subjects(8, gold=["real", "bogus"])
    volunteers = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(4)]
    rng = random.Random(1)
    for s in items:
        for v in volunteers:
            vote(workflow, s, v, rng.choice(["real", "real", "bogus"]))
    before = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "p_real"))

    summary = recompute_workflow(workflow.pk, method="dawid_skene", reevaluate=False)

    arrays = vote_arrays(workflow)
    expected = crowd.dawid_skene(arrays.items, arrays.workers, arrays.labels, n_classes=2)
    after = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "p_real"))
    np.testing.assert_allclose([after[pk] for pk in arrays.subject_ids], expected.p_real, rtol=1e-9)
    assert after != before
    assert set(Subject.objects.values_list("aggregation_method", flat=True)) == {"dawid_skene"}
    assert summary.n_votes == 32 and summary.n_subjects == 8 and summary.n_participants == 4
    for w, pid in enumerate(arrays.participant_ids):
        skill = ParticipantSkill.objects.get(workflow=workflow, participant_id=pid)
        np.testing.assert_allclose(skill.confusion, expected.confusion[w])
        assert skill.p_l == pytest.approx(expected.confusion[w, 1, 1])
        assert skill.n_votes == 8 and skill.n_gold == 2


def test_recompute_keeps_subjects_voted_on_after_the_snapshot(workflow, subjects, monkeypatch):
    workflow.retirement_limit = 1000
    workflow.save()
    a, b = subjects(2)
    volunteers = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(3)]
    for v in volunteers[:2]:
        vote(workflow, a, v, "real")
        vote(workflow, b, v, "bogus")

    import labeling.recompute as recompute

    real_vote_arrays = recompute.vote_arrays

    def snapshot_then_vote(wf):
        arrays = real_vote_arrays(wf)
        vote(workflow, a, volunteers[2], "bogus")  # arrives while the recompute runs
        return arrays

    monkeypatch.setattr(recompute, "vote_arrays", snapshot_then_vote)
    summary = recompute.recompute_workflow(workflow.pk, method="majority", reevaluate=False)
    a.refresh_from_db()
    b.refresh_from_db()
    assert summary.n_kept_newer == 1
    assert a.aggregation_method == "swap"  # kept its newer incremental state
    assert b.aggregation_method == "majority" and b.p_real == 0.0


def test_recompute_rebuilds_gold_tallies_for_labels_set_after_the_votes(workflow, subjects):
    (s,) = subjects(1)
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    vote(workflow, s, p, "bogus")
    Subject.objects.filter(pk=s.pk).update(gold_label="bogus")
    recompute_workflow(workflow.pk, method="swap", reevaluate=False)
    skill = ParticipantSkill.objects.get(participant=p)
    assert (skill.n_gold, skill.n_gold_correct, skill.bogus_seen, skill.bogus_said_bogus) == (1, 1, 1, 1)
    assert skill.p_d == pytest.approx(
        crowd.swap_skill(0, 0, 1, 1, pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS)[1]
    )
    assert Vote.objects.get(participant=p).was_gold is False  # votes record what was known when cast


def test_unknown_method_is_a_clear_error(workflow):
    with pytest.raises(ValueError, match="Unknown aggregation method 'median'"):
        recompute_workflow(workflow.pk, method="median")


def test_aggregation_and_retirement_run_as_jobs_on_the_short_queue(
    workflow, subjects, django_capture_on_commit_callbacks
):
    from jobs.services import SHORT, kind_of
    from labeling.jobs import recompute_all_aggregations, request_aggregation, request_retirement_check

    (s,) = subjects(1)
    vote(workflow, s, Participant.objects.create(kind=Participant.ANONYMOUS), "real")
    assert kind_of(Job.AGGREGATE).queue == SHORT and kind_of(Job.RETIREMENT).queue == SHORT
    with django_capture_on_commit_callbacks(execute=True):
        assert recompute_all_aggregations.delay().get() == 1  # eager in tests: the job ran on commit
    job = Job.objects.get(workflow=workflow, kind=Job.AGGREGATE)
    assert job.status == Job.SUCCEEDED, job.error
    assert job.params["result"]["n_votes"] == 1
    s.refresh_from_db()
    assert s.aggregation_method == "dawid_skene"
    with django_capture_on_commit_callbacks(execute=True):
        job = request_retirement_check(workflow)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED and job.params["result"]["examined"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        again = request_aggregation(workflow)
    again.refresh_from_db()
    assert again.pk != job.pk and again.status == Job.SUCCEEDED  # idempotent: a second run is harmless
