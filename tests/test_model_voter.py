"""The model as one more voter: maths in mlcore.aggregation, the vote path, the recompute, the training guard."""

import math
import uuid

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import ModelVersion, Participant, ProjectMembership, Subject, Workflow
from labeling import model_voter, recompute
from labeling.models import ParticipantSkill
from labeling.selection import ticket_for
from labeling.services import record_vote, undo_vote
from mlcore.aggregation import (
    MODEL_BIN_EDGES,
    dawid_skene,
    dawid_skene_with_model,
    model_confusion,
    model_log_lr,
    model_score_bins,
    model_swap_undo,
    model_swap_update,
    swap,
    swap_update,
    swap_with_model,
)

FAST = settings(max_examples=40, deadline=None)
N_BINS = len(MODEL_BIN_EDGES) - 1


@st.composite
def binary_votes(draw):
    n_items = draw(st.integers(1, 10))
    n_workers = draw(st.integers(1, 5))
    n_votes = draw(st.integers(0, 30))
    pick = st.lists(st.integers(0, n_items - 1), min_size=n_votes, max_size=n_votes)
    items = np.array(draw(pick), dtype=int)
    workers = np.array(draw(st.lists(st.integers(0, n_workers - 1), min_size=n_votes, max_size=n_votes)), int)
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n_votes, max_size=n_votes)), dtype=int)
    return items, workers, labels, n_items


scores_st = st.floats(0.0, 1.0, allow_nan=False)


def uninformative_confusion(draw_row):
    row = np.asarray(draw_row, dtype=float) + 1e-3
    row /= row.sum()
    return np.vstack([row, row])


# --- confusion and likelihood ratio ---------------------------------------------------------------------


@FAST
@given(st.lists(scores_st, min_size=0, max_size=40), st.data())
def test_confusion_rows_are_distributions(scores, data):
    truth = data.draw(st.lists(st.integers(0, 1), min_size=len(scores), max_size=len(scores)))
    conf = model_confusion(scores, truth)
    assert conf.shape == (2, N_BINS)
    np.testing.assert_allclose(conf.sum(axis=1), 1.0)
    assert np.all(conf >= 0)


@FAST
@given(st.lists(scores_st, min_size=1, max_size=20), st.integers(1, 4), st.integers(1, 4))
def test_scores_that_do_not_depend_on_the_class_give_no_evidence(scores, n_real_copies, n_bogus_copies):
    # The same scores seen on real and on bogus gold subjects (in any proportion): every ratio is 1.
    s = np.array(scores)
    all_scores = np.concatenate([np.tile(s, n_real_copies), np.tile(s, n_bogus_copies)])
    truth = np.r_[np.ones(len(s) * n_real_copies, int), np.zeros(len(s) * n_bogus_copies, int)]
    conf = model_confusion(all_scores, truth)
    np.testing.assert_allclose(model_log_lr(np.linspace(0, 1, 50), conf), 0.0, atol=1e-12)


def test_a_constant_score_is_no_evidence_whatever_the_class_balance():
    conf = model_confusion(np.full(30, 0.5), np.r_[np.ones(25, int), np.zeros(5, int)])
    assert model_log_lr([0.5, 0.01, 0.99], conf).tolist() == [0.0, 0.0, 0.0]


def test_a_good_model_speaks_up_at_the_ends_and_missing_scores_say_nothing():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    scores = np.clip(np.where(truth == 1, 0.95, 0.05) + rng.normal(0, 0.03, 400), 0, 1)
    conf = model_confusion(scores, truth)
    lr = model_log_lr([0.999, 0.001, np.nan], conf)
    assert lr[0] > math.log(20) and lr[1] < -math.log(20) and lr[2] == 0.0
    assert model_score_bins([np.nan, 0.0, 1.0]).tolist() == [-1, 0, N_BINS - 1]


def test_model_maths_refuses_bad_input():
    with pytest.raises(ValueError, match="probabilities"):
        model_score_bins([1.5])
    with pytest.raises(ValueError, match="length"):
        model_confusion([0.2, 0.3], [1])
    with pytest.raises(ValueError, match="0 \\(bogus\\) or 1"):
        model_confusion([0.2], [2])
    with pytest.raises(ValueError, match="edges"):
        model_score_bins([0.2], edges=(0.0, 0.6, 0.5, 1.0))
    with pytest.raises(ValueError, match="model confusion"):
        model_log_lr([0.2], np.ones((3, N_BINS)))


# --- SWAP: the model's step ----------------------------------------------------------------------------


@FAST
@given(
    st.floats(0.001, 0.999),
    scores_st,
    st.lists(st.floats(0.0, 1.0), min_size=N_BINS, max_size=N_BINS),
    st.lists(st.tuples(st.booleans(), st.floats(0.05, 0.95), st.floats(0.05, 0.95)), max_size=6),
)
def test_uninformative_model_leaves_swap_posterior_as_the_crowd_alone(prior, score, row, votes):
    conf = uninformative_confusion(row)
    with_model = model_swap_update(prior, score, conf)
    crowd = prior
    for says_real, p_l, p_d in votes:
        with_model = swap_update(with_model, says_real, p_l, p_d)
        crowd = swap_update(crowd, says_real, p_l, p_d)
    assert with_model == pytest.approx(crowd, abs=1e-12)


@FAST
@given(
    st.floats(0.01, 0.99),
    st.sampled_from([0.001, 0.02, 0.5, 0.8, 0.999]),
    st.lists(st.tuples(st.booleans(), st.floats(0.05, 0.95), st.floats(0.05, 0.95)), max_size=5),
    st.integers(0, 5),
)
def test_the_model_step_commutes_with_volunteer_steps_and_undoes_exactly(prior, score, votes, at):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 300)
    conf = model_confusion(np.clip(truth * 0.9 + rng.normal(0.05, 0.1, 300), 0, 1), truth)
    first = model_swap_update(prior, score, conf)
    late = prior
    for i, (says_real, p_l, p_d) in enumerate(votes):
        if i == at:
            late = model_swap_update(late, score, conf)
        first = swap_update(first, says_real, p_l, p_d)
        late = swap_update(late, says_real, p_l, p_d)
    if at >= len(votes):
        late = model_swap_update(late, score, conf)
    assert first == pytest.approx(late, rel=1e-9, abs=1e-12)
    assert model_swap_undo(model_swap_update(prior, score, conf), score, conf) == pytest.approx(
        prior, abs=1e-12
    )


@FAST
@given(
    st.floats(0.01, 0.99),
    scores_st,
    st.lists(st.floats(0.01, 1.0), min_size=N_BINS, max_size=N_BINS),
    st.lists(st.floats(0.01, 1.0), min_size=N_BINS, max_size=N_BINS),
)
def test_the_model_moves_p_real_towards_the_side_its_bin_favours(prior, score, real_row, bogus_row):
    conf = np.array([np.array(bogus_row) / sum(bogus_row), np.array(real_row) / sum(real_row)])
    lr = model_log_lr([score], conf)[0]
    after = model_swap_update(prior, score, conf)
    assert (after > prior) == (lr > 1e-12) or abs(after - prior) < 1e-9
    assert (after < prior) == (lr < -1e-12) or abs(after - prior) < 1e-9


def test_an_informative_agreeing_model_moves_swap_towards_the_truth():
    truth = np.r_[np.ones(100, int), np.zeros(100, int)]
    scores = np.r_[np.full(95, 0.995), np.full(5, 0.2), np.full(95, 0.005), np.full(5, 0.8)]
    conf = model_confusion(scores, truth)
    assert model_swap_update(0.5, 0.995, conf) > 0.9
    assert model_swap_update(0.5, 0.005, conf) < 0.1
    # Batch: SWAP's posterior plus the model's vote, NaN = no vote.
    items, workers, labels = np.array([0, 1, 2]), np.array([0, 0, 0]), np.array([1, 0, 1])
    crowd = swap(items, workers, labels, n_items=3)
    both = swap_with_model(crowd, [0.995, 0.005, np.nan], conf)
    assert both.method == "swap+model"
    assert both.p_real[0] > crowd.p_real[0] and both.p_real[1] < crowd.p_real[1]
    assert both.p_real[2] == pytest.approx(crowd.p_real[2])


# --- Dawid–Skene: the model as a worker -----------------------------------------------------------------


@FAST
@given(binary_votes(), st.lists(st.floats(0.0, 1.0), min_size=N_BINS, max_size=N_BINS), st.data())
def test_uninformative_model_leaves_dawid_skene_as_the_crowd_alone(votes, row, data):
    items, workers, labels, n_items = votes
    scores = np.array(data.draw(st.lists(scores_st, min_size=n_items, max_size=n_items)))
    crowd = dawid_skene(items, workers, labels, n_classes=2, n_items=n_items)
    fixed = dawid_skene_with_model(
        items, workers, labels, scores, n_items=n_items, model_confusion_fixed=uninformative_confusion(row)
    )
    np.testing.assert_allclose(fixed.posterior, crowd.posterior, atol=1e-12)
    # Learned by EM: a model that gives every subject the same score learns equal rows and says nothing.
    constant = dawid_skene_with_model(items, workers, labels, np.full(n_items, scores[0]), n_items=n_items)
    np.testing.assert_allclose(constant.posterior, crowd.posterior, atol=1e-12)
    # No score at all: no vote.
    silent = dawid_skene_with_model(items, workers, labels, np.full(n_items, np.nan), n_items=n_items)
    np.testing.assert_allclose(silent.posterior, crowd.posterior, atol=1e-12)


def test_an_informative_model_helps_dawid_skene_decide_close_calls():
    rng = np.random.default_rng(3)
    n = 300
    truth = rng.integers(0, 2, n)
    # Two mediocre votes per subject (70 % right) from a crowd of 20, and a model that is 95 % right.
    items = np.repeat(np.arange(n), 2)
    workers = rng.integers(0, 20, 2 * n)
    labels = np.where(rng.random(2 * n) < 0.7, truth[items], 1 - truth[items])
    scores = np.where(rng.random(n) < 0.95, truth * 0.98 + 0.01, 0.5)
    crowd = dawid_skene(items, workers, labels, n_classes=2, n_items=n)
    both = dawid_skene_with_model(items, workers, labels, scores, n_items=n)
    assert (both.labels == truth).mean() > (crowd.labels == truth).mean() + 0.1
    conf = np.array(both.params["model_confusion"])
    assert conf.shape == (2, N_BINS) and both.params["model_voted"] == n
    # Gold clamps too, as in dawid_skene.
    gold = dawid_skene_with_model(items, workers, labels, scores, n_items=n, gold_items=[0], gold_labels=[1])
    assert gold.posterior[0, 1] == 1.0


# === The web app ==========================================================================================


def new_subject(workflow, name, **kwargs):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **kwargs)


def skilled(workflow, p=0.9):
    person = Participant.objects.create(kind=Participant.ANONYMOUS)
    ParticipantSkill.objects.create(workflow=workflow, participant=person, p_l=p, p_d=p)
    return person


def vote(workflow, subject, participant, answer):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant,
        answer=answer,
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, subject, participant),
    )


@pytest.fixture
def voting(workflow):
    """A SWAP workflow (retire at 0.99 / 0.01, min 2 votes) with an active model that did well on 40 gold
    subjects: 19 of 20 real ones scored 0.995, 19 of 20 bogus ones 0.005."""
    version = ModelVersion.objects.create(
        workflow=workflow, version=1, status=ModelVersion.ACTIVE, promoted_at=timezone.now()
    )
    Subject.objects.bulk_create(
        Subject(
            project=workflow.project,
            workflow=workflow,
            external_id=f"gold-{k}",
            gold_label=field,
            # The first of each twenty is a miss: the model is not perfect, its ratios stay finite.
            model_score=(0.995 if field == "real" else 0.005) if k % 20 else 0.5,
        )
        for k, field in enumerate(["real"] * 20 + ["bogus"] * 20)
    )
    for name, value in dict(
        retirement_rule=Workflow.RULE_SWAP, swap_p_high=0.99, swap_p_low=0.01, min_votes=2, max_votes=10,
        model_votes=True, active_model=version,
    ).items():  # fmt: skip
        setattr(workflow, name, value)
    workflow.save()
    return workflow


def test_model_and_two_skilled_volunteers_agreeing_retire_a_subject(voting):
    s = new_subject(voting, "agree", model_score=0.995)
    assert not vote(voting, s, skilled(voting), "real").retired_now
    assert vote(voting, s, skilled(voting), "real").retired_now
    s.refresh_from_db()
    assert s.is_retired and s.decided_with_model and s.aggregation_method == "swap+model"
    # Two 90 % volunteers alone reach 81/82 = 0.988 < 0.99: the model's vote made the difference.
    voting.model_votes = False
    voting.save(update_fields=["model_votes"])
    t = new_subject(voting, "crowd-only", model_score=0.995)
    assert not vote(voting, t, skilled(voting), "real").retired_now
    assert not vote(voting, t, skilled(voting), "real").retired_now
    t.refresh_from_db()
    assert t.p_real == pytest.approx(81 / 82) and not t.decided_with_model and not t.is_retired


def test_disagreement_keeps_the_subject_open(voting):
    s = new_subject(voting, "disagree", model_score=0.005)
    vote(voting, s, skilled(voting), "real")
    assert not vote(voting, s, skilled(voting), "real").retired_now
    s.refresh_from_db()
    assert not s.is_retired and 0.01 < s.p_real < 0.99 and s.decided_with_model


def test_the_model_never_votes_on_what_it_trained_on_or_on_gold(voting):
    trained = new_subject(voting, "trained", model_score=0.995)
    model_voter.record_training_ids(voting.active_model, [trained.pk, 10**9])
    vote(voting, trained, skilled(voting), "real")
    trained.refresh_from_db()
    assert trained.p_real == pytest.approx(0.9) and not trained.decided_with_model
    gold = Subject.objects.filter(workflow=voting, gold_label="real").first()
    vote(voting, gold, skilled(voting), "real")
    gold.refresh_from_db()
    assert gold.p_real == pytest.approx(0.9) and not gold.decided_with_model


def test_undo_reverses_exactly_and_the_last_undo_takes_the_model_vote_too(voting):
    s = new_subject(voting, "undo", model_score=0.995)
    alice, bob = skilled(voting), skilled(voting)
    first = vote(voting, s, alice, "real").vote
    s.refresh_from_db()
    after_first = s.p_real
    assert after_first > 0.99 and s.decided_with_model  # model (×~19) and one volunteer (×9)
    second = vote(voting, s, bob, "bogus").vote
    undo_vote(workflow=voting, participant=bob, vote_key=second.idempotency_key)
    s.refresh_from_db()
    assert s.p_real == pytest.approx(after_first, rel=1e-9)
    undo_vote(workflow=voting, participant=alice, vote_key=first.idempotency_key)
    s.refresh_from_db()
    assert s.p_real is None and not s.decided_with_model and s.aggregation_method == ""
    # The next first vote asks the model again: the same start as the first time.
    vote(voting, s, skilled(voting), "real")
    s.refresh_from_db()
    assert s.p_real == pytest.approx(after_first, rel=1e-9) and s.decided_with_model


def test_recompute_adds_the_model_as_a_worker_and_marks_what_it_helped(voting):
    helped = new_subject(voting, "helped", model_score=0.995)
    silent = new_subject(voting, "no-score")
    people = [skilled(voting) for _ in range(3)]
    for person in people:
        vote(voting, helped, person, "real")
        vote(voting, silent, person, "real")
    gold = Subject.objects.filter(workflow=voting, gold_label="bogus")[:3]
    for g in gold:
        for person in people:
            vote(voting, g, person, "bogus")
    recompute.recompute_workflow(voting.pk, "dawid_skene", reevaluate=False)
    helped.refresh_from_db()
    silent.refresh_from_db()
    assert helped.aggregation_method == "dawid_skene+model" and helped.decided_with_model
    assert not silent.decided_with_model and helped.p_real > 0.5
    # Without the model the recompute clears the mark: the posterior no longer holds its vote.
    voting.model_votes = False
    voting.save(update_fields=["model_votes"])
    recompute.recompute_workflow(voting.pk, "dawid_skene", reevaluate=False)
    helped.refresh_from_db()
    assert helped.aggregation_method == "dawid_skene" and not helped.decided_with_model


def test_a_model_that_says_nothing_on_gold_moves_nothing_and_marks_nothing(voting):
    Subject.objects.filter(workflow=voting, gold_label__in=["real", "bogus"]).update(model_score=0.5)
    s = new_subject(voting, "uninformed", model_score=0.999)
    vote(voting, s, skilled(voting), "real")
    s.refresh_from_db()
    assert s.p_real == pytest.approx(0.9) and not s.decided_with_model and s.aggregation_method == "swap"


# --- The training guard ----------------------------------------------------------------------------------


@pytest.fixture
def labelled_pool(project, workflow, settings, tmp_path):
    from django.core.cache import cache

    from tests.loop_support import make_pool, tiny_loop_settings

    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    pool = make_pool(project, workflow, n=40, n_labeled=24, n_gold=10, seed=7)
    Subject.objects.filter(pk__in=pool.labeled[:4]).update(decided_with_model=True)
    return pool


def test_training_leaves_out_or_down_weights_labels_the_model_helped_decide(workflow, labelled_pool):
    from loop import services as loop

    helped = labelled_pool.labeled[:4]
    data = loop._gather_round_data(workflow, None, lambda *a: None)
    assert len(data.train_ids) == 20 and not set(helped) & set(data.train_ids.tolist())
    workflow.model_helped_training = True
    workflow.save(update_fields=["model_helped_training"])
    data = loop._gather_round_data(workflow, None, lambda *a: None)
    weight = dict(zip(data.train_ids.tolist(), data.weights.tolist(), strict=True))
    assert len(weight) == 24
    assert [weight[pk] for pk in helped] == pytest.approx([0.9 * model_voter.MODEL_HELPED_WEIGHT] * 4)
    assert weight[labelled_pool.labeled[5]] == pytest.approx(0.9)


# --- Settings ------------------------------------------------------------------------------------------


def test_owner_turns_the_model_vote_on_and_others_cannot(client, owner, workflow, django_user_model):
    url = reverse("api_workflow", args=[workflow.project.slug, workflow.pk])
    body = {"model_votes": True, "model_helped_training": True}
    client.logout()
    assert client.patch(url, body, content_type="application/json").status_code in (401, 403)
    viewer = django_user_model.objects.create(username="viewer")  # force_login needs no password
    ProjectMembership.objects.create(project=workflow.project, user=viewer, role="viewer")
    client.force_login(viewer)
    assert client.patch(url, body, content_type="application/json").status_code == 403
    client.force_login(django_user_model.objects.create(username="stranger"))
    assert client.patch(url, body, content_type="application/json").status_code == 404
    workflow.refresh_from_db()
    assert not workflow.model_votes and not workflow.model_helped_training
    client.force_login(owner)
    resp = client.patch(url, body, content_type="application/json")
    assert resp.status_code == 200 and resp.json()["model_votes"] is True
    workflow.refresh_from_db()
    assert workflow.model_votes and workflow.model_helped_training
    page = reverse("core:workflow_settings", args=[workflow.project.slug, workflow.slug])
    html = client.get(page).content.decode()
    assert 'name="model_votes"' in html and 'name="model_helped_training"' in html
