"""Labels for training: subjects with enough evidence, their P(real), weight, votes and gold flag."""

import pytest

from core.models import Subject, Workflow
from labeling.labels import TrainingLabel, count_decided_labels, training_labels

pytestmark = pytest.mark.django_db


def add(workflow, name, **fields):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **fields)


@pytest.fixture
def pool(workflow):
    workflow.min_votes = 3
    workflow.consensus_fraction = 0.8
    workflow.save()
    return {
        "gold_real": add(workflow, "gr", gold_label="real", p_real=0.3, vote_count=4),
        "gold_bogus_no_votes": add(workflow, "gb", gold_label="bogus"),
        "retired_real": add(workflow, "rr", status=Subject.RETIRED, p_real=0.97, vote_count=5),
        "retired_review": add(
            workflow, "rv", status=Subject.RETIRED, needs_review=True, p_real=0.5, vote_count=20
        ),
        "confident_active": add(workflow, "ca", p_real=0.1, vote_count=3),
        "unsure_active": add(workflow, "ua", p_real=0.6, vote_count=6),
        "too_few_votes": add(workflow, "tf", p_real=0.99, vote_count=2),
        "no_votes": add(workflow, "nv"),
        "holdout": add(workflow, "ho", p_real=0.02, vote_count=4, is_holdout=True),
    }


def test_training_labels_pick_subjects_with_enough_evidence(workflow, pool):
    labels = {lab.subject_id: lab for lab in training_labels(workflow)}
    ids = {name: s.pk for name, s in pool.items()}
    assert set(labels) == {
        ids["gold_real"],
        ids["gold_bogus_no_votes"],
        ids["retired_real"],
        ids["confident_active"],
        ids["holdout"],
    }
    assert labels[ids["gold_real"]] == TrainingLabel(ids["gold_real"], 1.0, 1.0, 4, True, False)
    assert labels[ids["gold_bogus_no_votes"]] == TrainingLabel(
        ids["gold_bogus_no_votes"], 0.0, 1.0, 0, True, False
    )
    retired = labels[ids["retired_real"]]
    assert (retired.p_real, retired.n_votes, retired.is_gold) == (0.97, 5, False)
    assert retired.weight == pytest.approx(0.94)
    assert labels[ids["confident_active"]].weight == pytest.approx(0.8)
    assert labels[ids["holdout"]].is_holdout
    assert [lab.subject_id for lab in training_labels(workflow)] == sorted(labels)


def test_count_matches_the_list(workflow, pool):
    assert count_decided_labels(workflow) == len(training_labels(workflow)) == 5
    Subject.objects.filter(pk=pool["unsure_active"].pk).update(p_real=0.85)
    assert count_decided_labels(workflow) == len(training_labels(workflow)) == 6


def test_min_votes_and_include_undecided(workflow, pool):
    with_two = {lab.subject_id for lab in training_labels(workflow, min_votes=2)}
    assert pool["too_few_votes"].pk in with_two
    everything = {lab.subject_id for lab in training_labels(workflow, include_undecided=True)}
    assert {pool["unsure_active"].pk, pool["retired_review"].pk} <= everything
    assert pool["no_votes"].pk not in everything and pool["too_few_votes"].pk not in everything
    unsure = next(
        lab
        for lab in training_labels(workflow, include_undecided=True)
        if lab.subject_id == pool["unsure_active"].pk
    )
    assert unsure.weight == pytest.approx(0.2)


def test_other_workflows_are_not_mixed_in(workflow, pool, project):
    other = Workflow.objects.create(project=project, slug="other", name="Other")
    add(other, "x", gold_label="real")
    assert count_decided_labels(other) == 1
    assert count_decided_labels(workflow) == 5
