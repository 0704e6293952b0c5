"""The selector with and without a model: ranking, exploration, gold, unseen-only, no pile-on, no random sort."""

import random
import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.models import ModelVersion, Participant, Subject
from labeling.selection import CANDIDATES, TOP_FEW, next_subject, ticket_for
from labeling.services import record_vote

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_reservations():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ranked(workflow):
    """60 subjects ranked by priority (subject i has priority i), an active model, no exploration, no gold."""
    subjects = [
        Subject.objects.create(
            project=workflow.project,
            workflow=workflow,
            external_id=f"r{i}",
            priority=i / 100,
            random_key=random.random(),
        )
        for i in range(60)
    ]
    version = ModelVersion.objects.create(workflow=workflow, version=1, status=ModelVersion.ACTIVE)
    workflow.active_model = version
    workflow.exploration_share = 0.0
    workflow.gold_schedule = [[None, 0.0]]
    workflow.retirement_limit = 100
    workflow.save()
    return sorted(subjects, key=lambda s: -s.priority)


def volunteer(tag="v"):
    return Participant.objects.create(kind=Participant.ANONYMOUS, session_key=f"{tag}-{uuid.uuid4().hex[:8]}")


def answer(workflow, subject, participant):
    record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer="real",
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


def test_with_a_model_volunteers_get_the_top_of_the_ranking(workflow, ranked):
    top = {s.pk for s in ranked[:TOP_FEW]}
    rng = random.Random(1)
    for _ in range(10):
        cache.clear()
        assert next_subject(workflow, volunteer(), rng=rng).pk in top


def test_a_volunteer_moves_down_the_ranking_past_what_they_answered(workflow, ranked):
    p = volunteer()
    for subject in ranked[:20]:
        answer(workflow, subject, p)
    picks = {next_subject(workflow, p, rng=random.Random(i)).pk for i in range(15)}
    assert picks <= {s.pk for s in ranked[20 : 20 + TOP_FEW]}


def test_volunteers_arriving_together_do_not_pile_onto_one_subject(workflow, ranked):
    rng = random.Random(3)
    served = [next_subject(workflow, volunteer(), rng=rng).pk for _ in range(TOP_FEW * 2)]
    assert len(set(served)) == len(served)  # each reserved subject goes to one volunteer
    assert set(served) <= {s.pk for s in ranked[:CANDIDATES]}
    # When everything near the top is reserved, people still get a subject.
    for _ in range(CANDIDATES):
        assert next_subject(workflow, volunteer(), rng=rng) is not None


def test_the_same_volunteer_keeps_their_reservation_eligible(workflow, ranked):
    p = volunteer()
    first = next_subject(workflow, p, rng=random.Random(0))
    again = {next_subject(workflow, p, rng=random.Random(i)).pk for i in range(30)}
    assert first.pk in again


def test_exploration_share_serves_random_subjects(workflow, ranked):
    workflow.exploration_share = 1.0
    workflow.save()
    picks = {next_subject(workflow, volunteer(), rng=random.Random(i)).pk for i in range(40)}
    assert len(picks - {s.pk for s in ranked[:CANDIDATES]}) > 0


def test_without_a_model_selection_is_random_unseen_and_unretired(workflow):
    subjects = [
        Subject.objects.create(
            project=workflow.project, workflow=workflow, external_id=f"s{i}", random_key=i / 40
        )
        for i in range(40)
    ]
    workflow.gold_schedule = [[None, 0.0]]
    workflow.retirement_limit = 100
    workflow.save()
    retired = subjects[:10]
    Subject.objects.filter(pk__in=[s.pk for s in retired]).update(status=Subject.RETIRED)
    p = volunteer()
    for subject in subjects[10:20]:
        answer(workflow, subject, p)
    picks = {next_subject(workflow, p, rng=random.Random(i)).pk for i in range(60)}
    assert picks <= {s.pk for s in subjects[20:]}
    assert len(picks) >= 10  # spread over the pool, not one fixed order


def test_gold_subjects_are_mixed_in_by_the_schedule(workflow, ranked):
    gold = Subject.objects.create(
        project=workflow.project, workflow=workflow, external_id="gold", gold_label="real", random_key=0.5
    )
    workflow.gold_schedule = [[None, 1.0]]
    workflow.save()
    assert next_subject(workflow, volunteer(), rng=random.Random(0)) == gold
    p = volunteer()
    answer(workflow, gold, p)
    assert next_subject(workflow, p, rng=random.Random(0)).pk in {s.pk for s in ranked[:TOP_FEW]}


def test_queries_are_few_indexed_and_never_random_sorts(workflow, ranked):
    p = volunteer()
    for subject in ranked[:30]:
        answer(workflow, subject, p)
    with CaptureQueriesContext(connection) as queries:
        assert next_subject(workflow, p, rng=random.Random(0)) is not None
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "RANDOM()" not in sql
    assert len(queries.captured_queries) <= 3  # count answered, ranked candidates, the subject
