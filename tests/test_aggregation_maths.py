"""Properties of the crowd maths in mlcore.aggregation and the simulated volunteers in mlcore.crowd."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcore.aggregation import (
    AggregationResult,
    dawid_skene,
    label_accuracy,
    majority_vote,
    posterior_entropy,
    swap,
    swap_skill,
    swap_skill_update,
    swap_tally_update,
    swap_update,
    with_model_vote,
)
from mlcore.crowd import (
    ALWAYS_REAL,
    SPAMMER,
    aggregate_soft_labels,
    make_panel,
    simulate_crowd,
    simulate_vote_sequences,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def vote_sets(draw, min_classes=2, max_classes=4):
    n_classes = draw(st.integers(min_classes, max_classes))
    n_items = draw(st.integers(1, 12))
    n_workers = draw(st.integers(1, 6))
    n_votes = draw(st.integers(0, 40))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n_votes, max_size=n_votes))
    workers = draw(st.lists(st.integers(0, n_workers - 1), min_size=n_votes, max_size=n_votes))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n_votes, max_size=n_votes))
    return (
        np.array(items, dtype=int),
        np.array(workers, dtype=int),
        np.array(labels, dtype=int),
        n_classes,
        n_items,
    )


def assert_probabilities(result: AggregationResult, n_items: int, n_classes: int):
    post = result.posterior
    assert post.shape == (n_items, n_classes)
    assert np.all(np.isfinite(post)) and np.all(post >= 0)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-9)
    conf = result.confusion
    assert conf.shape[1:] == (n_classes, n_classes)
    assert np.all(np.isfinite(conf)) and np.all(conf >= 0)
    np.testing.assert_allclose(conf.sum(axis=2), 1.0, atol=1e-9)


# --- probabilities ---------------------------------------------------------------------------------------


@FAST
@given(vote_sets())
def test_majority_and_dawid_skene_posteriors_are_probabilities(votes):
    items, workers, labels, k, n_items = votes
    for method in (majority_vote, dawid_skene):
        result = method(items, workers, labels, n_classes=k, n_items=n_items)
        assert_probabilities(result, n_items, k)


@FAST
@given(vote_sets(max_classes=2), st.floats(0.05, 0.95))
def test_swap_posteriors_are_probabilities(votes, prior):
    items, workers, labels, _, n_items = votes
    gold = np.arange(0, n_items, 2)
    gold_labels = gold % 2
    result = swap(items, workers, labels, gold, gold_labels, prior=prior, n_items=n_items)
    assert_probabilities(result, n_items, 2)


# --- symmetry --------------------------------------------------------------------------------------------


@FAST
@given(vote_sets(max_classes=4), st.randoms(use_true_random=False))
def test_relabelling_classes_permutes_the_output(votes, rnd):
    items, workers, labels, k, n_items = votes
    perm = np.array(rnd.sample(range(k), k))
    for method in (majority_vote, dawid_skene):
        base = method(items, workers, labels, n_classes=k, n_items=n_items)
        moved = method(items, workers, perm[labels], n_classes=k, n_items=n_items)
        # Class c in the original problem is class perm[c] in the relabelled one.
        np.testing.assert_allclose(moved.posterior[:, perm], base.posterior, atol=1e-7)
        np.testing.assert_allclose(moved.confusion[:, perm][:, :, perm], base.confusion, atol=1e-7)


# --- perfect and uninformative volunteers ------------------------------------------------------------------


@FAST
@given(st.integers(2, 4), st.integers(1, 30), st.integers(1, 5), st.integers(0, 10_000))
def test_perfect_volunteers_give_exact_labels(k, n_items, votes_per_item, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    items = np.repeat(np.arange(n_items), votes_per_item)
    # Distinct volunteers per subject, as in the product (one vote per volunteer and subject):
    # the same volunteer counted twice on one subject would confirm itself.
    workers = np.concatenate([rng.choice(6, votes_per_item, replace=False) for _ in range(n_items)])
    labels = truth[items]
    mv = majority_vote(items, workers, labels, n_classes=k)
    np.testing.assert_array_equal(mv.posterior, np.eye(k)[truth])
    if votes_per_item == 1:
        return  # one vote per subject says nothing about who is reliable; DS may rightly hedge
    ds = dawid_skene(items, workers, labels, n_classes=k)
    np.testing.assert_array_equal(ds.labels, truth)
    # With four votes or more each, the evidence overwhelms the pseudo-counts (with three, a binary
    # problem on 10 subjects can stay near 0.98: measured over 1,800 random cases).
    if votes_per_item >= 4 and n_items >= 10:
        assert ds.posterior[np.arange(n_items), truth].min() > 0.99


def test_constant_volunteer_carries_no_information_in_swap():
    rng = np.random.default_rng(3)
    n_gold = 40
    gold_truth = np.tile([0, 1], n_gold // 2)  # saw as many real as bogus gold subjects
    # Worker 0 always says real; they first vote on all gold, then on 30 unknown subjects.
    items = np.r_[np.arange(n_gold), n_gold + np.arange(30)]
    labels = np.ones(len(items), dtype=int)
    result = swap(items, np.zeros(len(items), dtype=int), labels, np.arange(n_gold), gold_truth, prior=0.3)
    np.testing.assert_allclose(result.p_real[n_gold:], 0.3, atol=1e-12)
    # The same holds for the incremental helper the web app uses.
    p_l, p_d = swap_skill(n_gold // 2, n_gold // 2, n_gold // 2, 0)
    assert swap_update(0.3, True, p_l, p_d) == pytest.approx(0.3)
    # ...whereas an honest volunteer with the same exposure does move the subject.
    honest_pl, honest_pd = swap_skill(20, 18, 20, 19)
    assert swap_update(0.3, True, honest_pl, honest_pd) > 0.7
    del rng


def test_constant_volunteer_carries_no_information_in_dawid_skene():
    n_items = 300
    items = np.arange(n_items)
    labels = np.zeros(n_items, dtype=int)
    alone = dawid_skene(items, np.zeros(n_items, dtype=int), labels, n_classes=2, class_prior=[0.3, 0.7])
    np.testing.assert_allclose(alone.posterior, np.tile([0.3, 0.7], (n_items, 1)), atol=0.02)

    # Adding a constant voter to an honest crowd hardly moves Dawid–Skene but flips majority ties.
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 2, n_items)
    sim = simulate_crowd(
        truth, n_volunteers=30, votes_per_item=4, seed=1, spammer_share=0, always_real_share=0
    )
    ds = dawid_skene(sim.items, sim.workers, sim.labels, n_classes=2)
    constant = sim.workers.max() + 1
    items2 = np.r_[sim.items, np.arange(n_items)]
    workers2 = np.r_[sim.workers, np.full(n_items, constant)]
    labels2 = np.r_[sim.labels, np.zeros(n_items, dtype=int)]
    ds2 = dawid_skene(items2, workers2, labels2, n_classes=2)
    mv, mv2 = majority_vote(sim.items, sim.workers, sim.labels), majority_vote(items2, workers2, labels2)
    assert np.abs(ds2.p_real - ds.p_real).mean() < 0.02
    assert np.abs(mv2.p_real - mv.p_real).mean() > 0.05


def test_swap_with_perfect_gold_trained_volunteers_converges():
    rng = np.random.default_rng(11)
    n_gold, n_items, n_workers = 60, 40, 5
    truth = rng.integers(0, 2, n_gold + n_items)
    truth[:2] = [0, 1]
    # Every volunteer first classifies all gold subjects perfectly, then the unknown ones perfectly.
    items = np.tile(np.arange(n_gold + n_items), n_workers)
    workers = np.repeat(np.arange(n_workers), n_gold + n_items)
    labels = truth[items]
    result = swap(items, workers, labels, np.arange(n_gold), truth[:n_gold])
    confusion = result.confusion
    assert np.all(confusion[:, 1, 1] > 0.95) and np.all(confusion[:, 0, 0] > 0.95)
    p = result.p_real[n_gold:]
    t = truth[n_gold:]
    assert np.all(p[t == 1] > 0.999) and np.all(p[t == 0] < 0.001)


def test_gold_clamped_dawid_skene_learns_that_a_crowd_is_systematically_wrong():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 200)
    items = np.repeat(np.arange(200), 3)
    workers = np.tile([0, 1, 2], 200)
    labels = 1 - truth[items]  # everyone answers the opposite
    plain = dawid_skene(items, workers, labels)
    assert label_accuracy(plain.posterior, truth) == 0.0  # without gold the flip is unidentifiable
    gold = np.arange(20)
    clamped = dawid_skene(items, workers, labels, gold_items=gold, gold_labels=truth[gold])
    np.testing.assert_array_equal(clamped.posterior[gold], np.eye(2)[truth[gold]])
    assert label_accuracy(clamped.posterior[20:], truth[20:]) == 1.0
    assert np.all(clamped.confusion[:, 0, 1] > 0.9) and clamped.params["n_gold"] == 20


# --- SWAP bookkeeping ----------------------------------------------------------------------------------


@FAST
@given(vote_sets(max_classes=2), st.booleans())
def test_vectorised_swap_equals_vote_by_vote_updates(votes, gold_every_other):
    items, workers, labels, _, n_items = votes
    gold = np.arange(0, n_items, 2 if gold_every_other else 3)
    gold_truth = (gold * 7 + 1) % 2
    result = swap(items, workers, labels, gold, gold_truth, prior=0.4, n_items=n_items)
    p = np.full(n_items, 0.4)
    tallies = {}
    truth = dict(zip(gold.tolist(), gold_truth.tolist(), strict=True))
    for i, w, said in zip(items.tolist(), workers.tolist(), labels.tolist(), strict=True):
        counts = tallies.get(w, (0, 0, 0, 0))
        p_l, p_d = swap_skill(*counts)
        p[i] = swap_update(p[i], said == 1, p_l, p_d)
        if i in truth:
            assert swap_skill_update(*counts, truth[i], said) == swap_skill(
                *swap_tally_update(*counts, truth[i], said)
            )
            tallies[w] = swap_tally_update(*counts, truth[i], said)
    np.testing.assert_allclose(result.p_real, p, atol=1e-9)


def test_swap_skills_are_clipped_and_start_uninformative():
    assert swap_skill(0, 0, 0, 0) == (0.5, 0.5)
    p_l, p_d = swap_skill(1000, 1000, 1000, 0)
    assert p_l == 0.99 and p_d == 0.01
    assert swap_update(0.5, True, 0.5, 0.5) == 0.5


# --- model as a witness, entropy --------------------------------------------------------------------------


def test_with_model_vote_is_bayes_for_one_extra_witness():
    rng = np.random.default_rng(5)
    crowd = rng.uniform(0.01, 0.99, 50)
    model = rng.uniform(0.01, 0.99, 50)
    combined = with_model_vote(crowd, model, weight=1.0)
    expected = crowd * model / (crowd * model + (1 - crowd) * (1 - model))
    np.testing.assert_allclose(combined, expected, rtol=1e-9)
    np.testing.assert_allclose(with_model_vote(crowd, model, weight=0.0), crowd)
    np.testing.assert_allclose(with_model_vote(crowd, np.full(50, 0.5)), crowd)
    # A half-weight model moves the crowd posterior less than a full vote, in the same direction.
    half = with_model_vote(crowd, model, weight=0.5)
    assert np.all(np.abs(half - crowd) <= np.abs(combined - crowd) + 1e-12)
    result = majority_vote([0, 0, 1], [0, 1, 0], [1, 1, 0])
    combined_result = with_model_vote(result, np.array([0.2, 0.9]))
    assert combined_result.method == "majority+model"
    assert_probabilities(combined_result, 2, 2)


def test_posterior_entropy_bounds():
    assert posterior_entropy(np.full((1, 4), 0.25))[0] == pytest.approx(2.0)
    assert posterior_entropy(np.eye(3))[1] == pytest.approx(0.0)
    assert posterior_entropy(np.array([0.5]))[0] == pytest.approx(1.0)


# --- edge cases and validation -------------------------------------------------------------------------


def test_empty_input_and_unvoted_items():
    for method in (majority_vote, dawid_skene):
        empty = method([], [], [], n_classes=3)
        assert empty.posterior.shape == (0, 3)
        unvoted = method([], [], [], n_classes=3, n_items=4, n_workers=2)
        np.testing.assert_allclose(unvoted.posterior, 1 / 3)
    ds = dawid_skene([0, 0, 2], [0, 1, 1], [1, 1, 0], n_classes=2, n_items=5, class_prior=[0.8, 0.2])
    np.testing.assert_allclose(ds.posterior[[1, 3, 4]], [[0.8, 0.2]] * 3)
    sw = swap([0], [0], [1], n_items=3, prior=0.2)
    np.testing.assert_allclose(sw.p_real[1:], 0.2)


def test_worker_with_one_vote_is_not_extreme():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 100)
    sim = simulate_crowd(
        truth, n_volunteers=20, votes_per_item=3, seed=2, spammer_share=0, always_real_share=0
    )
    newcomer = sim.workers.max() + 1
    ds = dawid_skene(np.r_[sim.items, 0], np.r_[sim.workers, newcomer], np.r_[sim.labels, 1], n_classes=2)
    row = ds.confusion[newcomer]
    assert np.all(row > 0.15) and np.all(row < 0.9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(items=[0, 1], workers=[0], labels=[0, 1]), "equal length"),
        (dict(items=[0, -1], workers=[0, 0], labels=[0, 1]), "non-negative"),
        (dict(items=[0, 1], workers=[0, 0], labels=[0, 2]), "labels must be in"),
        (dict(items=[0.5, 1], workers=[0, 0], labels=[0, 1]), "whole numbers"),
        (dict(items=["a", "b"], workers=[0, 0], labels=[0, 1]), "integers"),
        (dict(items=[0, 5], workers=[0, 0], labels=[0, 1], n_items=3), "n_items"),
        (dict(items=[0, 1], workers=[0, 0], labels=[0, 1], n_classes=1), "n_classes"),
        (dict(items=[[0, 1]], workers=[[0, 0]], labels=[[0, 1]]), "1-D"),
    ],
)
def test_bad_votes_raise_clear_errors(kwargs, message):
    for method in (majority_vote, dawid_skene):
        with pytest.raises(ValueError, match=message):
            method(**kwargs)


def test_other_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="labels must be in"):
        swap([0, 1], [0, 0], [0, 2])
    with pytest.raises(ValueError, match="together"):
        swap([0], [0], [1], gold_items=[0])
    with pytest.raises(ValueError, match="gold_labels"):
        swap([0], [0], [1], gold_items=[0], gold_labels=[3])
    with pytest.raises(ValueError, match="prior"):
        swap([0], [0], [1], prior=1.0)
    with pytest.raises(ValueError, match="class_prior"):
        dawid_skene([0], [0], [1], class_prior=[1.0, 0.0])
    with pytest.raises(ValueError, match="together"):
        dawid_skene([0], [0], [1], gold_items=[0])
    with pytest.raises(ValueError, match="gold items must be"):
        dawid_skene([0], [0], [1], gold_items=[3], gold_labels=[1])
    with pytest.raises(ValueError, match="init"):
        dawid_skene([0], [0], [1], init="random")
    with pytest.raises(ValueError, match="probability"):
        swap_update(1.5, True, 0.9, 0.9)
    with pytest.raises(ValueError, match="0 \\(bogus\\) or 1"):
        swap_tally_update(0, 0, 0, 0, truth=2, said=1)
    with pytest.raises(ValueError, match="shape"):
        with_model_vote(np.full((3, 2), 0.5), np.full(4, 0.5))
    with pytest.raises(ValueError, match="probabilities"):
        with_model_vote(np.full(3, 0.5), np.array([0.1, 1.2, 0.3]))


# --- simulated crowd and the DS-vs-majority claim ----------------------------------------------------------


def test_dawid_skene_beats_majority_on_a_crowd_with_spammers():
    wins = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        truth = rng.integers(0, 2, 1500)
        sim = simulate_crowd(
            truth, n_volunteers=60, votes_per_item=5, seed=seed, spammer_share=0.35, always_real_share=0.1
        )
        mv = label_accuracy(majority_vote(sim.items, sim.workers, sim.labels).posterior, truth)
        ds = label_accuracy(dawid_skene(sim.items, sim.workers, sim.labels).posterior, truth)
        wins.append(ds - mv)
    assert min(wins) > 0.01, wins


def test_simulated_crowd_matches_its_volunteers():
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 2, 4000)
    sim = simulate_crowd(truth, n_volunteers=100, votes_per_item=5, seed=4)
    assert sim.n_votes == 5 * 4000
    # Distinct volunteers on each subject.
    pairs = sim.items * 1000 + sim.workers
    assert len(np.unique(pairs)) == len(pairs)
    assert (sim.kind == SPAMMER).sum() == 5 and (sim.kind == ALWAYS_REAL).sum() == 2
    honest = sim.kind == "honest"
    assert sim.sensitivity[honest].min() >= 0.77 and sim.specificity[honest].max() <= 0.996
    # Observed sensitivity of the pooled honest volunteers matches the planted one.
    real_votes = (truth[sim.items] == 1) & honest[sim.workers]
    planted = sim.sensitivity[sim.workers[real_votes]].mean()
    assert sim.labels[real_votes].mean() == pytest.approx(planted, abs=0.02)
    always = np.isin(sim.workers, np.flatnonzero(sim.kind == ALWAYS_REAL))
    assert np.all(sim.labels[always] == 1)


def test_vote_sequences_are_prefix_consistent_and_deterministic():
    truth = np.random.default_rng(0).integers(0, 2, 50)
    a = simulate_vote_sequences(truth, max_votes=8, seed=3)
    b = simulate_vote_sequences(truth, max_votes=8, seed=3)
    np.testing.assert_array_equal(a.workers, b.workers)
    first3 = a.first(3)
    np.testing.assert_array_equal(first3.labels.reshape(3, 50).T, a.labels[:, :3])
    assert all(len(set(row)) == 8 for row in a.workers.tolist())
    with pytest.raises(ValueError, match="distinct"):
        simulate_vote_sequences(truth, max_votes=300, seed=0, n_volunteers=20)
    with pytest.raises(ValueError, match="0 \\(bogus\\) and 1"):
        simulate_crowd(np.array([0, 2]))
    with pytest.raises(ValueError, match="spammer_share"):
        make_panel(10, spammer_share=1.5)


def test_aggregate_soft_labels_are_mostly_right_and_calibrated_enough():
    truth = np.random.default_rng(1).integers(0, 2, 2000)
    p = aggregate_soft_labels(truth, votes_per_item=5, seed=0)
    assert p.shape == truth.shape and np.all((p >= 0) & (p <= 1))
    assert ((p > 0.5) == truth).mean() > 0.97
    confident = (p > 0.95) | (p < 0.05)
    assert ((p[confident] > 0.5) == truth[confident]).mean() > 0.98
