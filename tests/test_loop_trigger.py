"""Triggering rounds: K new decided labels, coalescing, the owner's request, the outbox sweep.

Votes go through labeling.services.record_vote. Inside a test transaction on_commit callbacks do not
run, so the hook the vote service calls after commit (loop.on_votes_committed) is called here by
hand, exactly as the service would, and jobs stay queued and undispatched (nothing is sent).
"""

import uuid

import pytest
from django.core.cache import cache
from django.db import IntegrityError, transaction

from core.models import Participant, Subject
from jobs.models import Job
from jobs.services import sweep_jobs
from labeling.selection import ticket_for
from labeling.services import record_vote
from loop import services as loop

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def rb_workflow(workflow):
    workflow.retirement_limit = 1  # one vote decides a subject: each vote is one new label
    workflow.train_every = 5
    workflow.save()
    return workflow


def subjects(workflow, n):
    return [
        Subject.objects.create(
            project=workflow.project, workflow=workflow, external_id=f"t-{i}", random_key=i / n
        )
        for i in range(n)
    ]


def vote(workflow, subject, participant, answer="real"):
    result = record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )
    loop.on_votes_committed(workflow.pk)  # what the vote service runs after commit
    return result


def open_rounds(workflow):
    return Job.objects.filter(workflow=workflow, kind=Job.TRAIN, status__in=[Job.QUEUED, Job.RUNNING])


def test_the_kth_decided_label_queues_one_round_and_later_votes_coalesce(rb_workflow):
    pool = subjects(rb_workflow, 16)
    p = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="a")
    for subject in pool[:4]:
        vote(rb_workflow, subject, p)
    assert not open_rounds(rb_workflow).exists()

    vote(rb_workflow, pool[4], p)
    job = open_rounds(rb_workflow).get()
    assert (
        job.status == Job.QUEUED and job.params["reason"] == "labels" and job.params["labels_at_request"] == 5
    )
    assert job.dispatched_at is None  # sent only after commit
    rb_workflow.refresh_from_db()
    assert rb_workflow.labels_at_last_round == 5

    # Five more labels while the round is open: no second round, the trigger coalesces.
    for subject in pool[5:11]:
        vote(rb_workflow, subject, p)
    assert open_rounds(rb_workflow).count() == 1

    # The round ends; the labels that arrived meanwhile start the next one within K votes.
    Job.objects.filter(pk=job.pk).update(status=Job.SUCCEEDED)
    votes_after = 0
    for subject in pool[11:]:
        vote(rb_workflow, subject, p)
        votes_after += 1
        if open_rounds(rb_workflow).exists():
            break
    second = open_rounds(rb_workflow).get()
    assert votes_after <= rb_workflow.train_every
    assert second.pk != job.pk and second.params["labels_at_request"] >= 10


def test_votes_that_cannot_reach_the_threshold_cost_no_query(rb_workflow, django_assert_num_queries):
    pool = subjects(rb_workflow, 3)
    p = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="a")
    vote(rb_workflow, pool[0], p)  # counts: 1 decided, 4 more needed
    record_vote(
        workflow=rb_workflow,
        subject_id=pool[1].pk,
        participant=p,
        answer="bogus",
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(rb_workflow, pool[1], p),
    )
    with django_assert_num_queries(0):
        loop.on_votes_committed(rb_workflow.pk)


def test_skips_and_undecided_votes_do_not_count(rb_workflow):
    rb_workflow.retirement_limit = 3
    rb_workflow.save()
    pool = subjects(rb_workflow, 5)
    voters = [Participant.objects.create(kind=Participant.ANONYMOUS, session_key=f"v{i}") for i in range(2)]
    for subject in pool:
        vote(rb_workflow, subject, voters[0], "skip")
        vote(rb_workflow, subject, voters[1], "real")
    assert not open_rounds(rb_workflow).exists()


def test_train_every_zero_turns_automatic_rounds_off(rb_workflow):
    rb_workflow.train_every = 0
    rb_workflow.save()
    pool = subjects(rb_workflow, 6)
    p = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="a")
    for subject in pool:
        vote(rb_workflow, subject, p)
    assert not open_rounds(rb_workflow).exists()


def test_owner_requests_coalesce_and_the_database_allows_one_open_round(rb_workflow, owner):
    job, created = loop.request_training(rb_workflow, user=owner)
    again, created_again = loop.request_training(rb_workflow, user=owner, force_promote=True)
    assert created and not created_again and again.pk == job.pk
    job.refresh_from_db()
    assert job.params["force_promote"] is True and job.created_by == owner
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(project=rb_workflow.project, workflow=rb_workflow, kind=Job.TRAIN)


def test_the_sweep_dispatches_what_the_broker_never_took(rb_workflow, django_capture_on_commit_callbacks):
    # Scoring without an active model fails at once: enough to see the job was run.
    job, _ = loop.request_scoring(rb_workflow)
    assert job.dispatched_at is None
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_jobs()
    assert report.dispatched == [job.pk]
    job.refresh_from_db()
    assert job.dispatched_at is not None and job.status == Job.FAILED
    assert "no active model" in job.error


def test_the_sweep_starts_a_round_for_labels_that_arrived_without_votes(rb_workflow):
    pool = subjects(rb_workflow, 6)
    # Labels decided by a re-aggregation (no vote, so no vote hook ran).
    Subject.objects.filter(pk__in=[s.pk for s in pool]).update(
        status=Subject.RETIRED, vote_count=3, p_real=0.9, retired_reason="recompute"
    )
    report = sweep_jobs()
    job = open_rounds(rb_workflow).get()
    assert report.triggered == [job.pk] and job.params["reason"] == "sweep"
    assert sweep_jobs().triggered == []  # coalesced


def test_gold_and_held_out_subjects_do_not_count_towards_a_round(rb_workflow):
    pool = subjects(rb_workflow, 12)
    Subject.objects.filter(pk__in=[s.pk for s in pool[:6]]).update(
        gold_label="real"
    )  # experts: evaluation only
    Subject.objects.filter(pk__in=[s.pk for s in pool[6:8]]).update(is_holdout=True)
    p = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="a")
    for subject in pool[6:10]:  # 2 held-out + 2 trainable labels
        vote(rb_workflow, subject, p)
    assert loop.trainable_label_count(rb_workflow) == 2
    assert sweep_jobs().triggered == [] and not open_rounds(rb_workflow).exists()
    for subject in pool[10:]:
        vote(rb_workflow, subject, p)
    assert loop.trainable_label_count(rb_workflow) == 4
    assert not open_rounds(rb_workflow).exists()
