"""The vote service: idempotent, exactly once, late votes kept, retirement by count."""

import uuid

import pytest

from core.models import Participant, Subject
from labeling.models import Vote
from labeling.selection import ticket_for
from labeling.services import VoteError, record_vote

pytestmark = pytest.mark.django_db


def anon():
    return Participant.objects.create(kind=Participant.ANONYMOUS)


def vote(workflow, subject, participant, answer="real", key=None):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=key or uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def test_vote_is_stored_once_per_idempotency_key(workflow, make_subjects):
    (subject,) = make_subjects(1)
    p = anon()
    key = uuid.uuid4()
    first = vote(workflow, subject, p, key=key)
    again = vote(workflow, subject, p, key=key)
    assert first.created and not again.created
    assert again.vote.pk == first.vote.pk
    assert Vote.objects.count() == 1
    subject.refresh_from_db()
    assert subject.vote_count == 1


def test_second_vote_on_same_subject_returns_the_first(workflow, make_subjects):
    (subject,) = make_subjects(1)
    p = anon()
    first = vote(workflow, subject, p, "real")
    second = vote(workflow, subject, p, "bogus")
    assert not second.created and second.vote.pk == first.vote.pk
    assert Vote.objects.get().answer == "real"


def test_reusing_a_key_for_another_subject_is_refused(workflow, make_subjects):
    a, b = make_subjects(2)
    p = anon()
    key = uuid.uuid4()
    vote(workflow, a, p, key=key)
    with pytest.raises(VoteError, match="already used"):
        vote(workflow, b, p, key=key)
    assert Vote.objects.count() == 1


def test_unknown_answer_and_bad_key_are_refused(workflow, make_subjects):
    (subject,) = make_subjects(1)
    with pytest.raises(VoteError, match="not an answer"):
        vote(workflow, subject, anon(), "maybe")
    with pytest.raises(VoteError, match="UUID"):
        vote(workflow, subject, anon(), key="not-a-uuid")
    assert Vote.objects.count() == 0


def test_subject_of_another_project_is_refused(workflow, make_subjects, django_user_model):
    from core.models import Project, Workflow

    other_owner = django_user_model.objects.create_user("other")
    other = Project.objects.create(slug="other", name="Other", owner=other_owner)
    other_wf = Workflow.objects.create(project=other, slug="rb", name="RB")
    (subject,) = make_subjects(1)
    with pytest.raises(VoteError, match="No such subject"):
        vote(other_wf, subject, anon())


def test_retires_after_n_votes_and_keeps_late_votes(workflow, make_subjects):
    (subject,) = make_subjects(1)
    workflow.retirement_limit = 3
    workflow.save()
    results = [vote(workflow, subject, anon()) for _ in range(3)]
    assert [r.retired_now for r in results] == [False, False, True]
    subject.refresh_from_db()
    assert subject.status == Subject.RETIRED and subject.retired_reason.startswith("count")
    late = vote(workflow, subject, anon(), "bogus")
    assert late.created and late.vote.subject_was_retired
    subject.refresh_from_db()
    assert subject.vote_count == 4  # never dropped
    assert Vote.objects.filter(subject=subject).count() == 4


def test_skip_is_recorded_but_does_not_count_towards_retirement(workflow, make_subjects):
    (subject,) = make_subjects(1)
    result = vote(workflow, subject, anon(), "skip")
    assert result.created
    subject.refresh_from_db()
    assert subject.vote_count == 0 and subject.status == Subject.ACTIVE
