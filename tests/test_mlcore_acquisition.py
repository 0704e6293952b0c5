"""mlcore.acquisition on hand-built cases where the right answer is known."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlcore.acquisition import (
    STRATEGIES,
    STRATEGY_NAMES,
    Ranking,
    bald,
    diverse_top,
    entropy,
    k_center_greedy,
    least_confidence,
    margin,
    parse_strategy,
    random_sampling,
    rank_pool,
    select_batch,
    with_exploration,
)

P_REAL = np.array([0.9, 0.5, 0.2, 0.6, 0.99, 0.45])
# Closest to 0.5 first: 0.5, 0.45, 0.6, 0.2, 0.9, 0.99.
MOST_UNCERTAIN_FIRST = [1, 5, 3, 2, 0, 4]


@pytest.mark.parametrize("strategy", [least_confidence, margin, entropy])
def test_uncertainty_strategies_rank_the_most_uncertain_first(strategy):
    ranking = strategy(P_REAL)
    assert isinstance(ranking, Ranking)
    assert ranking.indices.tolist() == MOST_UNCERTAIN_FIRST
    assert np.all(np.diff(ranking.scores) <= 0)  # scores descend with the ranking
    assert strategy(P_REAL, k=2).indices.tolist() == MOST_UNCERTAIN_FIRST[:2]


def test_known_scores():
    np.testing.assert_allclose(least_confidence([0.5, 0.9]).scores, [0.5, 0.1])
    np.testing.assert_allclose(margin([0.5, 0.9]).scores, [1.0, 0.2])
    np.testing.assert_allclose(entropy([0.5, 1.0]).scores, [1.0, 0.0], atol=1e-9)
    # (N, 2) class-probability input (bogus, real) is understood too.
    assert entropy(np.array([[0.1, 0.9], [0.5, 0.5]])).indices.tolist() == [1, 0]


def test_top_k_with_ties_matches_a_full_stable_sort():
    rng = np.random.default_rng(0)
    p = rng.choice([0.1, 0.3, 0.5, 0.7], size=500)
    full = entropy(p)
    for k in (1, 7, 100, 499):
        top = entropy(p, k=k)
        np.testing.assert_array_equal(top.indices, full.indices[:k])


def test_bald_prefers_disagreement_over_ambiguity():
    mc = np.array(
        [
            [0.5, 0.02, 0.9, 0.6],
            [0.5, 0.98, 0.9, 0.4],
            [0.5, 0.03, 0.9, 0.6],
            [0.5, 0.97, 0.9, 0.4],
        ]
    )
    # item 0: every sample unsure (aleatoric) → no information; item 1: confident samples that
    # disagree → most informative; item 2: confident agreement → nothing to learn.
    ranking = bald(mc)
    assert ranking.indices[0] == 1
    scores = dict(zip(ranking.indices.tolist(), ranking.scores, strict=True))
    assert scores[0] == pytest.approx(0.0, abs=1e-9) and scores[2] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] > scores[3] > 0
    with pytest.raises(ValueError, match="T ≥ 2"):
        bald(np.array([0.2, 0.4]))
    with pytest.raises(ValueError, match="NaN"):
        bald(np.array([[0.2, np.nan], [0.3, 0.1]]))


def test_random_sampling_is_a_seeded_permutation():
    a, b = random_sampling(50, rng=3), random_sampling(50, rng=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert sorted(a.indices.tolist()) == list(range(50))
    assert not np.array_equal(a.indices, random_sampling(50, rng=4).indices)
    assert len(random_sampling(50, 10, rng=3)) == 10


def _clusters():
    """Three tight clusters of 10 points each around (0,0), (10,0) and (0,10)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres])
    return points, np.repeat([0, 1, 2], 10)


def test_k_center_greedy_covers_every_cluster():
    points, cluster = _clusters()
    picks = k_center_greedy(points, 3)
    assert sorted(cluster[picks.indices].tolist()) == [0, 1, 2]
    assert picks.indices[0] == 0  # no labelled set: the first candidate starts
    # With cluster 0 already labelled, the next two picks are from the other clusters.
    labeled = np.array([[0.0, 0.0]])
    picks = k_center_greedy(points, 2, labeled_features=labeled)
    assert sorted(cluster[picks.indices].tolist()) == [1, 2]
    assert np.all(picks.scores > 5)
    # Restricted to candidates.
    picks = k_center_greedy(points, 2, candidates=np.arange(10, 30))
    assert set(cluster[picks.indices]) == {1, 2}


def test_diverse_top_spreads_a_batch_the_base_ranking_would_concentrate():
    points, cluster = _clusters()
    # The base ranking loves cluster 1 (all its items score highest), then cluster 2, then 0.
    base_scores = np.where(cluster == 1, 0.9, np.where(cluster == 2, 0.8, 0.1))
    base = Ranking(np.argsort(-base_scores, kind="stable"), np.sort(base_scores)[::-1])
    assert set(cluster[base.indices[:3]]) == {1}
    diverse = diverse_top(base, points, 3, top_m=20)
    assert set(cluster[diverse.indices]) == {1, 2}  # only the top 20 (clusters 1 and 2) are eligible
    assert len(set(diverse.indices.tolist())) == 3
    assert diverse.scores[0] == pytest.approx(0.9)


def test_exploration_share_adds_random_pool_items():
    ranking = entropy(np.linspace(0.01, 0.5, 100))  # most uncertain = highest index
    batch = with_exploration(ranking, 10, 100, share=0.2, rng=0)
    assert len(batch) == 10 and batch.explored.sum() == 2
    np.testing.assert_array_equal(batch.indices[:8], ranking.indices[:8])
    assert not set(batch.indices[8:]) & set(ranking.indices[:8])
    assert np.all(np.isnan(batch.scores[batch.explored]))
    assert len(set(batch.indices.tolist())) == 10


def test_select_batch_combines_strategy_diversity_and_exploration():
    points, cluster = _clusters()
    p_real = np.where(cluster == 1, 0.5, 0.95)  # the model is unsure only about cluster 1
    plain = select_batch("entropy", 3, p_real=p_real)
    assert set(cluster[plain.indices]) == {1}
    mixed = select_batch(
        "entropy", 4, p_real=p_real, features=points, diversity=True, top_m=30, exploration=0.25
    )
    assert len(mixed) == 4 and mixed.explored.sum() == 1
    assert len(set(cluster[mixed.indices[:3]])) == 3  # k-center spreads the exploited part
    mc = np.stack([p_real, p_real])
    assert len(select_batch("bald", 5, mc_probs=mc)) == 5
    assert len(select_batch("random", 5, n_pool=30, rng=1)) == 5
    with pytest.raises(ValueError, match="mc_probs"):
        select_batch("bald", 3, p_real=p_real)
    with pytest.raises(ValueError, match="unknown acquisition strategy"):
        select_batch("coin_flip", 3, p_real=p_real)
    with pytest.raises(ValueError, match="features"):
        select_batch("entropy", 3, p_real=p_real, diversity=True)
    with pytest.raises(ValueError, match="disagree"):
        select_batch("entropy", 3, p_real=p_real, features=points[:5], diversity=True)


def test_invalid_probabilities_are_rejected():
    with pytest.raises(ValueError, match="probabilities"):
        entropy([0.2, 1.5])
    with pytest.raises(ValueError, match="probabilities"):
        margin([0.2, np.nan])


def test_bald_from_precomputed_scores_matches_bald_from_samples():
    rng = np.random.default_rng(5)
    mc = rng.random((20, 50))
    from mlcore.score import bald_from_probs

    from_samples = select_batch("bald", 10, mc_probs=mc)
    from_scores = select_batch("bald", 10, bald_scores=bald_from_probs(mc))
    np.testing.assert_array_equal(from_samples.indices, from_scores.indices)
    with pytest.raises(ValueError, match="finite"):
        select_batch("bald", 3, bald_scores=np.array([0.1, np.nan]))


def test_parse_strategy_names():
    assert parse_strategy("entropy") == ("entropy", False)
    assert parse_strategy(" BALD+diversity ") == ("bald", True)
    assert parse_strategy("") == ("entropy", False)  # the workflows' default
    assert parse_strategy(None) == ("entropy", False)
    assert {parse_strategy(name) for name in STRATEGY_NAMES} == {
        (base, diversity) for base in STRATEGIES for diversity in (False, True)
    }
    for bad in ("coin_flip", "entropy+", "+diversity", "bald+diversity+diversity"):
        with pytest.raises(ValueError, match="unknown acquisition strategy"):
            parse_strategy(bad)


def test_rank_pool_orders_the_whole_pool_and_scores_every_item():
    order, scores = rank_pool("entropy", P_REAL)
    assert order.tolist() == MOST_UNCERTAIN_FIRST
    np.testing.assert_allclose(scores, entropy(P_REAL).scores[np.argsort(entropy(P_REAL).indices)])
    bald_scores = np.array([0.0, 0.3, 0.1, 0.2, 0.0, 0.05])
    order, scores = rank_pool("bald", P_REAL, bald_scores=bald_scores)
    assert order.tolist() == [1, 3, 2, 5, 0, 4] and np.array_equal(scores, bald_scores)
    a, _ = rank_pool("random", P_REAL, seed=7)
    b, _ = rank_pool("random", n_pool=len(P_REAL), seed=7)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="mc_probs or bald_scores"):
        rank_pool("bald", P_REAL)
    with pytest.raises(ValueError, match="features"):
        rank_pool("entropy+diversity", P_REAL)
    with pytest.raises(ValueError, match="disagree"):
        rank_pool("margin", P_REAL, bald_scores=bald_scores[:3])
    assert [len(part) for part in rank_pool("entropy", np.zeros(0))] == [0, 0]


def test_rank_pool_diversity_spreads_the_head_and_keeps_the_rest_in_order():
    points, cluster = _clusters()
    p_real = np.where(cluster == 1, 0.5, np.where(cluster == 2, 0.6, 0.95))
    plain, scores = rank_pool("entropy", p_real)
    order, diverse_scores = rank_pool("entropy+diversity", p_real, features=points, diverse_head=3, top_m=20)
    np.testing.assert_array_equal(scores, diverse_scores)  # diversity re-orders, it does not re-score
    assert set(cluster[plain[:3]]) == {1}
    assert set(cluster[order[:3]]) == {1, 2}  # only the top 20 (clusters 1 and 2) are eligible
    rest = plain[~np.isin(plain, order[:3])]
    np.testing.assert_array_equal(order[3:], rest)


def test_select_batch_is_the_head_of_rank_pool():
    points, cluster = _clusters()
    p_real = np.where(cluster == 1, 0.5, np.linspace(0.7, 0.95, 30))
    for strategy in ("entropy", "margin", "entropy+diversity", "random", "random+diversity"):
        order, _ = rank_pool(strategy, p_real, features=points, diverse_head=5, seed=3)
        batch = select_batch(strategy, 5, p_real=p_real, features=points, rng=3)
        np.testing.assert_array_equal(batch.indices, order[:5])


_FAST = settings(max_examples=60, deadline=None)
_P_REAL = arrays(np.float64, st.integers(0, 60), elements=st.floats(0.0, 1.0))


@st.composite
def _pool(draw):
    p_real = draw(_P_REAL)
    n = len(p_real)
    bald_scores = draw(arrays(np.float64, n, elements=st.floats(0.0, 1.0)))
    features = draw(arrays(np.float64, (n, 3), elements=st.floats(-10.0, 10.0)))
    raw_types = draw(arrays(np.float64, (n, 3), elements=st.floats(0.01, 1.0)))
    type_probs = raw_types / raw_types.sum(axis=1, keepdims=True)  # a type head's softmax
    return p_real, bald_scores, features, type_probs


@_FAST
@given(_pool(), st.sampled_from(STRATEGY_NAMES), st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_rank_pool_is_a_permutation_with_finite_scores(pool, strategy, head, seed):
    p_real, bald_scores, features, type_probs = pool
    order, scores = rank_pool(
        strategy, p_real, bald_scores=bald_scores, features=features, seed=seed, diverse_head=head,
        type_probs=type_probs,
    )  # fmt: skip
    assert sorted(order.tolist()) == list(range(len(p_real)))
    assert scores.shape == (len(p_real),) and np.all(np.isfinite(scores))
    again, _ = rank_pool(
        strategy, p_real, bald_scores=bald_scores, features=features, seed=seed, diverse_head=head,
        type_probs=type_probs,
    )  # fmt: skip
    np.testing.assert_array_equal(order, again)  # deterministic for a seed


@_FAST
@given(_P_REAL.filter(len))
def test_rank_pool_entropy_puts_the_most_uncertain_first(p_real):
    order, scores = rank_pool("entropy", p_real)
    closest = np.abs(p_real - 0.5).min()
    assert abs(p_real[order[0]] - 0.5) == pytest.approx(closest, abs=1e-12)
    assert np.all(np.diff(scores[order]) <= 0)
