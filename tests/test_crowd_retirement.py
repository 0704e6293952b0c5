"""Retirement rules: count, SWAP thresholds, consensus, max votes → review, by hand, re-evaluation."""

import uuid

import pytest

from core.models import Participant, Subject, Workflow
from labeling import retirement
from labeling.models import ParticipantSkill
from labeling.selection import ticket_for
from labeling.services import record_vote

pytestmark = pytest.mark.django_db


def new_subject(workflow, name="s", **kwargs):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **kwargs)


def skilled(workflow, p_l=0.9, p_d=0.9):
    """A volunteer whose skill is already known (as after gold answers or a recompute)."""
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    ParticipantSkill.objects.create(workflow=workflow, participant=p, p_l=p_l, p_d=p_d)
    return p


def vote(workflow, subject, participant, answer):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def configure(workflow, **fields):
    for k, v in fields.items():
        setattr(workflow, k, v)
    workflow.save()


def test_count_rule_retires_at_the_limit(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_COUNT, retirement_limit=2, max_votes=2)
    s = new_subject(workflow)
    assert not vote(workflow, s, skilled(workflow), "real").retired_now
    assert vote(workflow, s, skilled(workflow), "bogus").retired_now
    s.refresh_from_db()
    assert s.status == Subject.RETIRED and s.retired_reason == "count: 2 votes" and not s.needs_review


def test_swap_retires_as_real_once_above_p_high_but_not_before_min_votes(workflow):
    configure(
        workflow,
        retirement_rule=Workflow.RULE_SWAP,
        swap_p_high=0.95,
        swap_p_low=0.05,
        min_votes=3,
        max_votes=10,
    )
    s = new_subject(workflow)
    results = [vote(workflow, s, skilled(workflow, 0.99, 0.99), "real") for _ in range(3)]
    # After one vote P(real)=0.99 ≥ 0.95 already, but min_votes holds it until the third.
    assert [r.retired_now for r in results] == [False, False, True]
    s.refresh_from_db()
    assert s.status == Subject.RETIRED and s.retired_reason.startswith("swap: real")
    assert s.p_real >= 0.95


def test_swap_retires_as_bogus_below_p_low(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_SWAP, swap_p_low=0.05, min_votes=1, max_votes=10)
    s = new_subject(workflow)
    retired = [vote(workflow, s, skilled(workflow, 0.8, 0.8), "bogus").retired_now for _ in range(3)]
    # 0.5 → 0.2 → 0.0588 → 0.0154: below 0.05 at the third vote.
    assert retired == [False, False, True]
    s.refresh_from_db()
    assert s.retired_reason.startswith("swap: bogus") and s.p_real <= 0.05


def test_swap_sends_undecided_subjects_to_review_at_max_votes(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_SWAP, min_votes=1, max_votes=4)
    s = new_subject(workflow)
    answers = ["real", "bogus", "real", "bogus"]
    retired = [vote(workflow, s, skilled(workflow), a).retired_now for a in answers]
    assert retired == [False, False, False, True]
    s.refresh_from_db()
    assert s.needs_review and s.status == Subject.RETIRED and "expert review" in s.retired_reason


def test_consensus_rule(workflow):
    configure(
        workflow, retirement_rule=Workflow.RULE_CONSENSUS, consensus_fraction=0.75, min_votes=4, max_votes=6
    )
    decided, undecided = new_subject(workflow, "a"), new_subject(workflow, "b")
    for answer in ["real", "real", "bogus"]:
        vote(workflow, decided, skilled(workflow), answer)
    decided.refresh_from_db()
    assert decided.status == Subject.ACTIVE  # 2/3 < 0.75 and below min_votes anyway
    assert vote(workflow, decided, skilled(workflow), "real").retired_now  # 3/4 = 0.75
    decided.refresh_from_db()
    assert decided.retired_reason == "consensus: real 3/4"

    for answer in ["real", "bogus", "skip", "real", "bogus", "real", "bogus"]:
        vote(workflow, undecided, skilled(workflow), answer)
    undecided.refresh_from_db()
    assert undecided.vote_count == 6  # the skip does not count
    assert undecided.needs_review and undecided.is_retired


def test_gold_subjects_never_retire_by_rule(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_COUNT, retirement_limit=1)
    s = new_subject(workflow, gold_label="real")
    assert not vote(workflow, s, skilled(workflow), "real").retired_now
    s.refresh_from_db()
    assert s.status == Subject.ACTIVE


def test_decision_is_pure(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_SWAP, min_votes=2, max_votes=5, swap_p_high=0.9)
    s = Subject(project=workflow.project, workflow=workflow, external_id="x", vote_count=1, p_real=0.99)
    assert retirement.decision(s, workflow) is None
    s.vote_count = 2
    assert retirement.decision(s, workflow)[0] == "retire"
    s.p_real = 0.5
    assert retirement.decision(s, workflow) is None
    s.vote_count = 5
    assert retirement.decision(s, workflow)[0] == "review"


def test_reevaluation_after_a_rule_change_retires_what_is_now_decided(workflow):
    configure(workflow, retirement_rule=Workflow.RULE_COUNT, retirement_limit=100, max_votes=100)
    sure, unsure, gold = (
        new_subject(workflow, "sure"),
        new_subject(workflow, "unsure"),
        new_subject(workflow, "g"),
    )
    for _ in range(3):
        vote(workflow, sure, skilled(workflow, 0.95, 0.95), "real")
    vote(workflow, unsure, skilled(workflow), "real")
    vote(workflow, unsure, skilled(workflow), "bogus")
    Subject.objects.filter(pk=gold.pk).update(gold_label="real", vote_count=50, p_real=0.9999)

    configure(workflow, retirement_rule=Workflow.RULE_SWAP, swap_p_high=0.99, min_votes=2)
    result = retirement.reevaluate_workflow(workflow.pk)
    assert result == {"examined": 2, "retired": 1, "sent_to_review": 0}
    statuses = dict(Subject.objects.values_list("external_id", "status"))
    assert statuses == {"sure": "retired", "unsure": "active", "g": "active"}
    assert retirement.reevaluate_workflow(workflow.pk)["retired"] == 0  # idempotent


def test_manual_retire_and_unretire(workflow, owner):
    s = new_subject(workflow)
    assert retirement.manual_retire(s, owner)
    assert s.is_retired and s.retired_reason == "manual: retired by owner"
    assert not retirement.manual_retire(s, owner)
    assert retirement.manual_unretire(s, owner)
    assert s.status == Subject.ACTIVE and s.retired_reason == "" and s.retired_at is None
    Subject.objects.filter(pk=s.pk).update(status=Subject.RETIRED, needs_review=True)
    assert retirement.manual_unretire(s, owner)
    assert not s.needs_review and s.status == Subject.ACTIVE
    assert not retirement.manual_unretire(s, owner)
