"""mlcore.anomaly: weirdness scores and the gem ranking, on tiny arrays (properties with hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlcore.anomaly import (
    GEM_WEIGHTS,
    METHODS,
    flag_component,
    gem_ranking,
    isolation_forest_scores,
    knn_distance_scores,
    percentile_rank,
    urf_weirdness,
    weirdness,
)

# Few trees keep each example fast; the properties do not depend on the forest's size.
SMALL = {"n_trees": 15, "k": 3}
_FAST = settings(max_examples=15, deadline=None)


@st.composite
def _features(draw, min_rows=2, max_rows=30):
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 4))
    # Values from a small set as well as arbitrary floats, so duplicated rows and ties occur.
    values = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.5]), st.floats(-1e3, 1e3, allow_nan=False))
    return draw(arrays(np.float64, (n, d), elements=values))


def _blob_with_outlier(seed, n=150, d=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    out = int(rng.integers(n))
    x[out] = 12.0 * rng.choice([-1.0, 1.0], size=d)
    return x, out


@_FAST
@given(_features(), st.integers(0, 2**31 - 1))
def test_scores_are_ranks_in_unit_interval_and_deterministic(x, seed):
    first = weirdness(x, seed=seed, **SMALL)
    again = weirdness(x, seed=seed, **SMALL)
    assert set(first) == {*METHODS, "combined"}
    for name, values in first.items():
        assert values.shape == (x.shape[0],)
        assert np.all(np.isfinite(values))
        assert values.min() >= 0.0 and values.max() <= 1.0
        np.testing.assert_array_equal(values, again[name])


@_FAST
@given(_features(), st.data(), st.integers(0, 1000))
def test_scores_permute_with_the_rows(x, data, seed):
    perm = np.array(data.draw(st.permutations(range(x.shape[0]))))
    scores = weirdness(x, seed=seed, **SMALL)
    permuted = weirdness(x[perm], seed=seed, **SMALL)
    for name in scores:
        np.testing.assert_array_equal(permuted[name], scores[name][perm])


@_FAST
@given(_features(), st.integers(1, 9), st.integers(0, 1000))
def test_chunked_scoring_equals_unchunked(x, chunk, seed):
    whole = weirdness(x, seed=seed, **SMALL)
    chunked = weirdness(x, seed=seed, chunk=chunk, **SMALL)
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name])


def test_fit_on_a_sample_is_still_order_and_chunk_invariant():
    # max_fit below n: the detectors see a seeded sample drawn from a content-defined order.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 3))
    x[40:50] = x[0]  # duplicates straddle the sample boundary
    perm = rng.permutation(120)
    base = weirdness(x, seed=5, max_fit=30, **SMALL)
    permuted = weirdness(x[perm], seed=5, max_fit=30, chunk=17, **SMALL)
    for name in base:
        np.testing.assert_array_equal(permuted[name], base[name][perm])
    other_seed = weirdness(x, seed=6, max_fit=30, **SMALL)
    assert not np.array_equal(other_seed["iforest"], base["iforest"])


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_an_obvious_outlier_ranks_in_the_top_three_for_every_method(seed):
    x, out = _blob_with_outlier(seed)
    scores = weirdness(x, seed=seed, n_trees=50)
    for name, values in scores.items():
        top = np.argsort(-values, kind="stable")[:3]
        assert out in top, (name, out, top, values[out])


def test_single_method_functions_match_weirdness():
    x, out = _blob_with_outlier(1, n=80)
    np.testing.assert_array_equal(
        isolation_forest_scores(x, seed=2), weirdness(x, ("iforest",), seed=2)["iforest"]
    )
    np.testing.assert_array_equal(knn_distance_scores(x, k=4), weirdness(x, ("knn",), k=4)["knn"])
    np.testing.assert_array_equal(
        urf_weirdness(x, seed=2, n_trees=20), weirdness(x, ("urf",), seed=2, n_trees=20)["urf"]
    )
    assert knn_distance_scores(x, k=4)[out] == 1.0


def test_identical_rows_get_identical_scores():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 2))
    x[10] = x[20] = x[30]
    for values in weirdness(x, seed=1, **SMALL).values():
        assert values[10] == values[20] == values[30]


def test_percentile_rank_edges():
    np.testing.assert_array_equal(percentile_rank([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(percentile_rank([7.0]), [0.5])
    np.testing.assert_array_equal(percentile_rank([1.0, 1.0]), [0.5, 0.5])


@pytest.mark.parametrize(
    "bad, kwargs",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), {}),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), {}),
        (np.zeros((0, 3)), {}),
        (np.zeros((2, 2, 2)), {}),
        (np.zeros((5, 2)), {"methods": ("lof",)}),
        (np.zeros((5, 2)), {"methods": ()}),
        (np.zeros((5, 2)), {"k": 0}),
    ],
)
def test_bad_input_is_a_value_error(bad, kwargs):
    with pytest.raises(ValueError):
        weirdness(bad, **kwargs)


# -- gem ranking ----------------------------------------------------------------------------------------


@_FAST
@given(st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_gem_ranking_without_ratings_is_the_fixed_blend(n, seed):
    rng = np.random.default_rng(seed)
    w, dis = rng.random(n), rng.random(n)
    flags = rng.integers(0, 4, n) * rng.random(n)
    features = rng.standard_normal((n, 3))
    score, parts = gem_ranking(w, flags, dis, features, np.array([], dtype=int), np.array([]), seed=seed)
    expected = (
        GEM_WEIGHTS["weirdness"] * w
        + GEM_WEIGHTS["flags"] * flag_component(flags)
        + GEM_WEIGHTS["disagreement"] * dis
    ) / sum(GEM_WEIGHTS.values())
    np.testing.assert_allclose(score, expected, rtol=1e-12, atol=1e-15)
    assert set(parts) == {"weirdness", "flags", "disagreement", "relevance"}
    np.testing.assert_array_equal(parts["relevance"], np.zeros(n))
    assert score.min() >= 0.0 and score.max() <= 1.0


def test_flag_component_saturates():
    f = flag_component(np.array([0.0, 1.0, 3.0, -2.0, 1e9]))
    assert f[0] == 0.0 and f[1] == 0.5 and 0.5 < f[2] < 1.0 and f[3] == 0.0 and f[4] < 1.0


def _three_clusters(seed):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 6.0], [0.0, 6.0, 6.0]])
    label = np.repeat([0, 1, 2], 40)
    x = centres[label] + rng.standard_normal((120, 3)) * 0.5
    return x, label, rng


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_rating_a_cluster_five_lifts_it_and_rating_zero_sinks_it(seed):
    x, label, rng = _three_clusters(seed)
    w = rng.random(120)
    flags, dis = np.zeros(120), rng.random(120) * 0.2
    rated = np.concatenate([rng.choice(40, 4, replace=False), 40 + rng.choice(40, 4, replace=False)])
    ratings = np.where(rated < 40, 5.0, 0.0)  # cluster 0 is interesting, cluster 1 boring
    before, _ = gem_ranking(w, flags, dis, x, np.array([], dtype=int), np.array([]), seed=seed)
    after, parts = gem_ranking(w, flags, dis, x, rated, ratings, seed=seed)
    unrated = np.setdiff1d(np.arange(120), rated)
    rank_before, rank_after = percentile_rank(before), percentile_rank(after)
    gain = rank_after - rank_before
    liked, boring = unrated[label[unrated] == 0], unrated[label[unrated] == 1]
    assert after[liked].mean() > before[liked].mean() and np.mean(after[liked] > before[liked]) > 0.8
    assert np.all(after[boring] < before[boring])
    assert gain[liked].mean() > 0.15 and gain[boring].mean() < -0.1
    assert parts["relevance"][liked].mean() > 0.8 and parts["relevance"][boring].mean() < 0.2
    assert after.min() >= 0.0 and after.max() <= 1.0
    again, _ = gem_ranking(w, flags, dis, x, rated, ratings, seed=seed)
    np.testing.assert_array_equal(after, again)


def test_gem_ranking_rejects_mismatched_input():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError):
        gem_ranking(np.zeros(3), np.zeros(2), np.zeros(3), x, np.array([], dtype=int), np.array([]))
    with pytest.raises(ValueError):
        gem_ranking(np.zeros(3), np.zeros(3), np.zeros(3), x, np.array([5]), np.array([5.0]))
    with pytest.raises(ValueError):
        gem_ranking(np.zeros(3), np.zeros(3), np.zeros(3), x, np.array([0, 1]), np.array([5.0]))


# -- rare classes planted by the synthetic generators (bench/gems.py) --------------------------------------


def test_galaxies_plant_rare_classes_only_when_asked():
    from mlcore.galaxies import CLASSES, RARE_CLASSES, generate_cutouts

    plain = generate_cutouts(40, seed=9, size=32)
    same = generate_cutouts(40, seed=9, size=32, rare=None)
    np.testing.assert_array_equal(plain.images, same.images)
    assert plain.classes == same.classes and set(plain.classes) <= set(CLASSES)
    assert not {"ring", "lens_arc"} & set(plain.classes)

    common = [c for c in CLASSES if c != "merger"]
    planted = generate_cutouts(
        200, seed=9, size=32, classes=common, rare={"ring": 0.01, "lens_arc": 0.005, "merger": 0.001}
    )
    counts = {k: planted.classes.count(k) for k in RARE_CLASSES}
    assert counts == {"ring": 2, "lens_arc": 1, "merger": 1}
    assert len(planted) == 200 and np.all(np.isfinite(planted.images))
    with pytest.raises(ValueError):
        generate_cutouts(10, seed=0, size=32, rare={"unicorn": 0.1})
    with pytest.raises(ValueError):
        generate_cutouts(10, seed=0, size=32, rare={"ring": 2.0})


def test_synth_plants_nuclear_flare_dipoles_and_leaves_the_rest_unchanged():
    from mlcore.synth import generate_triplets

    plain = generate_triplets(120, seed=4, hard_fraction=0.3, size=31)
    planted = generate_triplets(120, seed=4, hard_fraction=0.3, size=31, rare={"nuclear_flare_dipole": 0.02})
    changed = [
        i
        for i in range(120)
        if planted.subtypes[i] != plain.subtypes[i] or planted.subtypes[i] == "nuclear_flare_dipole"
    ]
    assert len(changed) == 2 and all(planted.subtypes[i] == "nuclear_flare_dipole" for i in changed)
    assert all(planted.labels[i] == 1 for i in changed)
    others = np.setdiff1d(np.arange(120), changed)
    np.testing.assert_array_equal(planted.images[others], plain.images[others])
    assert [planted.metadata[i] for i in others] == [plain.metadata[i] for i in others]
    for i in changed:
        assert planted.metadata[i]["rare"] == "nuclear_flare_dipole"
        assert planted.images[i].shape == (3, 31, 31)
    with pytest.raises(ValueError):
        generate_triplets(10, seed=0, size=31, rare={"ghost": 0.1})
