"""Similarity answers: stored exactly once (idempotency key, one per task and participant), validated,
and counted per pair (PairStat with a Wilson interval)."""

import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from similarity.models import PairStat, SimilarityTask, SimilarityVote, wilson_interval
from similarity.selection import create_task, next_task
from similarity.services import SimilarityVoteError, record_similarity_vote, task_ticket
from tests.similarity_support import participant, similarity_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim_workflow(project):
    return similarity_workflow(project, n_subjects=24)


def test_the_demo_workflow_is_a_similarity_workflow_with_near_duplicates(project, sim_workflow):
    assert sim_workflow.slug == "similar" and sim_workflow.kind == "similarity"
    subjects = list(sim_workflow.subjects.all())
    assert len(subjects) == 24
    assert all(s.images.get("image") and s.truth_subtype for s in subjects)
    dups = [s for s in subjects if s.metadata.get("near_duplicate_of")]
    assert len(dups) == 1
    assert sim_workflow.get_absolute_url() == f"/similarity/p/{project.slug}/similar/"
    again = similarity_workflow(project, n_subjects=24)  # idempotent
    assert again.pk == sim_workflow.pk and again.subjects.count() == 24


def test_vote_is_stored_once_per_key_and_once_per_participant(sim_workflow):
    task = create_task(sim_workflow)
    assert len(task.candidates) == 15 and task.comparison_id not in task.candidates
    volunteer = participant()
    key = uuid.uuid4()
    chosen = [task.candidates[4], task.candidates[0], task.candidates[9]]
    ticket = task_ticket(task, volunteer)
    first = record_similarity_vote(
        task=task,
        participant=volunteer,
        chosen=chosen,
        none_similar=False,
        idempotency_key=key,
        ticket=ticket,
    )
    assert first.created and first.vote.chosen == sorted(chosen) and first.vote.n_chosen == 3
    retry = record_similarity_vote(
        task=task,
        participant=volunteer,
        chosen=chosen,
        none_similar=False,
        idempotency_key=key,
        ticket=ticket,
    )
    assert not retry.created and retry.vote.pk == first.vote.pk
    # A second answer (new key) by the same participant to the same task is not stored.
    other = record_similarity_vote(
        task=task,
        participant=volunteer,
        chosen=[],
        none_similar=True,
        idempotency_key=uuid.uuid4(),
        ticket=ticket,
    )
    assert not other.created and other.vote.pk == first.vote.pk
    assert SimilarityVote.objects.count() == 1
    task.refresh_from_db()
    assert task.n_votes == 1
    # The key cannot be reused by someone else.
    with pytest.raises(SimilarityVoteError, match="already used"):
        record_similarity_vote(
            task=task, participant=participant("b"), chosen=chosen, none_similar=False, idempotency_key=key
        )


def test_database_refuses_a_second_vote_and_an_inconsistent_one(sim_workflow):
    task = create_task(sim_workflow)
    volunteer = participant()
    SimilarityVote.objects.create(
        workflow=sim_workflow, task=task, participant=volunteer, chosen=[task.candidates[0]], n_chosen=1
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        SimilarityVote.objects.create(
            workflow=sim_workflow, task=task, participant=volunteer, none_similar=True
        )
    with pytest.raises(IntegrityError), transaction.atomic():  # "none similar" with something chosen
        SimilarityVote.objects.create(
            workflow=sim_workflow,
            task=task,
            participant=participant("x"),
            none_similar=True,
            chosen=[1],
            n_chosen=1,
        )


@pytest.mark.parametrize(
    "chosen, none, message",
    [
        ([], False, "Select the similar images"),
        ("first", True, "also chose"),
        ([999999], False, "not among this task"),
        (["abc"], False, "not a candidate id"),
    ],
)
def test_bad_answers_get_clear_errors_and_store_nothing(sim_workflow, chosen, none, message):
    task = create_task(sim_workflow)
    if chosen == "first":
        chosen = [task.candidates[0]]
    with pytest.raises(SimilarityVoteError, match=message):
        record_similarity_vote(
            task=task,
            participant=participant(),
            chosen=chosen,
            none_similar=none,
            idempotency_key=uuid.uuid4(),
        )
    with pytest.raises(SimilarityVoteError, match="UUID"):
        record_similarity_vote(
            task=task,
            participant=participant(),
            chosen=[task.candidates[0]],
            none_similar=False,
            idempotency_key="nope",
        )
    assert SimilarityVote.objects.count() == 0 and not PairStat.objects.exists()


def test_pair_stats_count_shown_and_chosen_and_tasks_retire(sim_workflow):
    sim_workflow.retirement_limit = 2
    sim_workflow.save(update_fields=["retirement_limit"])
    task = create_task(sim_workflow)
    a, b = task.candidates[0], task.candidates[1]
    record_similarity_vote(
        task=task,
        participant=participant("1"),
        chosen=f"{a},{b}",
        none_similar=False,
        idempotency_key=uuid.uuid4(),
        trusted=True,
    )
    result = record_similarity_vote(
        task=task,
        participant=participant("2"),
        chosen=[],
        none_similar=True,
        idempotency_key=uuid.uuid4(),
        trusted=True,
    )
    assert result.task_retired_now
    stats = {p.candidate_id: p for p in PairStat.objects.filter(comparison=task.comparison)}
    assert set(stats) == set(task.candidates)
    assert all(p.shown == 2 for p in stats.values())
    assert stats[a].chosen == 1 and stats[b].chosen == 1
    assert sum(p.chosen for p in stats.values()) == 2
    assert stats[a].rate == 0.5
    low, high = stats[a].interval
    assert low < 0.5 < high
    task.refresh_from_db()
    assert task.retired and task.n_votes == 2
    # A retired task is not offered again.
    assert next_task(sim_workflow, participant("3")).pk != task.pk


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2


def test_never_the_same_task_twice_for_one_participant(sim_workflow):
    volunteer = participant()
    seen = []
    for _ in range(6):
        task = next_task(sim_workflow, volunteer)
        assert next_task(sim_workflow, volunteer).pk == task.pk  # a reload shows the same task
        seen.append(task.pk)
        record_similarity_vote(
            task=task,
            participant=volunteer,
            chosen=[],
            none_similar=True,
            idempotency_key=uuid.uuid4(),
            ticket=task_ticket(task, volunteer),
        )
    assert len(set(seen)) == 6
    # Another volunteer is first offered the open tasks the first one answered.
    other = participant("other")
    assert next_task(sim_workflow, other).pk in seen
    assert SimilarityTask.objects.filter(strategy=SimilarityTask.RANDOM).count() == 6


@pytest.mark.postgres  # concurrent writers on separate connections: the in-memory SQLite test DB has one
@pytest.mark.django_db(transaction=True)
def test_concurrent_answers_count_every_pair(project):
    workflow = similarity_workflow(project, n_subjects=20)
    task = create_task(workflow)
    volunteers = [participant(str(i)) for i in range(6)]
    tickets = {v.pk: task_ticket(task, v) for v in volunteers}  # each was served the task
    errors = []

    def answer(volunteer):
        try:
            record_similarity_vote(
                task=task,
                participant=volunteer,
                chosen=[task.candidates[0]],
                none_similar=False,
                idempotency_key=uuid.uuid4(),
                ticket=tickets[volunteer.pk],
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=answer, args=(v,)) for v in volunteers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stat = PairStat.objects.get(comparison=task.comparison, candidate_id=task.candidates[0])
    assert (stat.shown, stat.chosen) == (6, 6)
    task.refresh_from_db()
    assert task.n_votes == 6
