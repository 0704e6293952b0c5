"""Class-balanced acquisition (mlcore.acquisition "balanced") and the realistic active-learning pool
(mlcore.synth subtype weights / faint reals, mlcore.simulation POOLS and average precision)."""

import dataclasses
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score

from mlcore.acquisition import (
    BALANCED_REAL_SHARE,
    STRATEGY_NAMES,
    class_balanced,
    entropy,
    rank_pool,
    select_batch,
)
from mlcore.cli import build_parser, simulation_configs
from mlcore.simulation import (
    POOLS,
    RunResult,
    SimulationConfig,
    average_precision,
    load_results,
    pool_options,
    prepare_data,
    report,
)
from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES, ZTF_BOGUS_WEIGHTS, generate_triplets

_FAST = settings(max_examples=60, deadline=None)
_P_REAL = arrays(np.float64, st.integers(0, 80), elements=st.floats(0.0, 1.0))
_SHARE = st.floats(0.0, 1.0)


def _entropy_bits(p):
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


@_FAST
@given(_P_REAL, _SHARE)
def test_balanced_is_a_permutation_that_keeps_the_quota_while_both_sides_last(p_real, share):
    ranking = class_balanced(p_real, real_share=share)
    order = ranking.indices
    assert sorted(order.tolist()) == list(range(len(p_real)))
    np.testing.assert_allclose(ranking.scores, _entropy_bits(p_real)[order], atol=1e-9)
    is_real = p_real[order] >= 0.5
    n_real, n_bogus = int(is_real.sum()), int((~is_real).sum())
    taken_real = np.cumsum(is_real)
    for m in range(1, len(order) + 1):
        real_left = taken_real[m - 1] < n_real
        bogus_left = m - taken_real[m - 1] < n_bogus
        if real_left and bogus_left:  # neither side exhausted yet: the quota holds within one item
            assert abs(taken_real[m - 1] - share * m) <= 1.0 + 1e-9
    # Within each side, the most uncertain come first.
    for side in (is_real, ~is_real):
        h = ranking.scores[side]
        assert np.all(np.diff(h) <= 1e-12)
    again = class_balanced(p_real, real_share=share)
    np.testing.assert_array_equal(order, again.indices)


def test_balanced_interleaves_a_rare_predicted_real_side_into_the_head():
    # 5 items called real (far from the boundary) and 45 bogus items right at it.
    p_real = np.r_[np.full(5, 0.9), np.linspace(0.3, 0.49, 45)]
    plain = entropy(p_real).indices[:10]
    assert not np.any(p_real[plain] >= 0.5)  # plain entropy never looks at the predicted reals
    head = class_balanced(p_real).indices[:10]
    assert int((p_real[head] >= 0.5).sum()) == 5 * BALANCED_REAL_SHARE * 2  # half of the first ten
    quarter = class_balanced(p_real, real_share=0.25).indices[:8]
    assert int((p_real[quarter] >= 0.5).sum()) == 2
    only_bogus = class_balanced(p_real, real_share=0.0).indices
    assert np.all(p_real[only_bogus[:45]] < 0.5)  # the predicted reals come last
    assert class_balanced(p_real, k=7).indices.tolist() == class_balanced(p_real).indices[:7].tolist()
    with pytest.raises(ValueError, match="real_share"):
        class_balanced(p_real, real_share=1.5)
    with pytest.raises(ValueError, match="probabilities"):
        class_balanced(np.array([0.2, np.nan]))


def test_balanced_goes_through_rank_pool_and_select_batch_like_every_strategy():
    assert "balanced" in STRATEGY_NAMES and "balanced+diversity" in STRATEGY_NAMES
    rng = np.random.default_rng(4)
    p_real = rng.random(60) ** 3
    order, scores = rank_pool("balanced", p_real)
    np.testing.assert_array_equal(order, class_balanced(p_real).indices)
    np.testing.assert_allclose(scores, _entropy_bits(p_real))  # per item, in pool order
    batch = select_batch("balanced", 6, p_real=p_real, rng=1)
    np.testing.assert_array_equal(batch.indices, order[:6])
    features = rng.normal(size=(60, 4))
    diverse, _ = rank_pool("balanced+diversity", p_real, features=features, diverse_head=5, top_m=12)
    assert set(diverse[:5]) <= set(order[:12]) and sorted(diverse.tolist()) == list(range(60))
    with pytest.raises(ValueError, match="needs p_real"):
        rank_pool("balanced", n_pool=3)


@pytest.fixture(scope="module")
def realistic():
    return generate_triplets(400, seed=11, size=21, hard_fraction=0.3, **pool_options("realistic"))


def test_realistic_pool_has_the_ztf_class_balance_and_bogus_mix(realistic):
    assert realistic.labels.mean() == pytest.approx(POOLS["realistic"]["real_fraction"])
    bogus = Counter(s for s, y in zip(realistic.subtypes, realistic.labels, strict=True) if y == 0)
    total = sum(ZTF_BOGUS_WEIGHTS.values())
    n_bogus = sum(bogus.values())
    for subtype in BOGUS_SUBTYPES:
        expected = ZTF_BOGUS_WEIGHTS[subtype] / total
        # Binomial spread of 360 draws: 4 standard deviations plus a little.
        assert (
            abs(bogus[subtype] / n_bogus - expected)
            <= 4 * np.sqrt(expected * (1 - expected) / n_bogus) + 0.01
        )
    reals = Counter(s for s, y in zip(realistic.subtypes, realistic.labels, strict=True) if y == 1)
    assert set(reals) <= set(REAL_SUBTYPES) and len(reals) == len(REAL_SUBTYPES)  # uniform, all present
    again = generate_triplets(400, seed=11, size=21, hard_fraction=0.3, **pool_options("realistic"))
    np.testing.assert_array_equal(again.images, realistic.images)
    assert again.subtypes == realistic.subtypes


def test_hard_fraction_real_applies_to_the_reals_only():
    batch = generate_triplets(
        80, seed=2, size=21, real_fraction=0.25, hard_fraction=0.0, hard_fraction_real=1.0
    )
    difficulty = np.array([m["difficulty"] for m in batch.metadata])
    assert np.all(difficulty[batch.labels == 1] == "hard") and np.all(difficulty[batch.labels == 0] == "easy")


def test_the_new_options_left_alone_give_the_same_data():
    plain = generate_triplets(60, seed=9, size=21, hard_fraction=0.3)
    same = generate_triplets(
        60, seed=9, size=21, hard_fraction=0.3, hard_fraction_real=0.3, subtype_weights={}
    )
    np.testing.assert_array_equal(plain.images, same.images)
    assert plain.subtypes == same.subtypes
    assert pool_options("balanced") == {
        "real_fraction": 0.5,
        "hard_fraction_real": None,
        "subtype_weights": None,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subtype_weights": {"comet": 1.0}}, "unknown subtype"),
        ({"subtype_weights": {"ghost": -1.0}}, "non-negative"),
        ({"subtype_weights": {"ghost": 0.0}}, "positive sum"),
        ({"hard_fraction_real": 1.5}, "hard_fraction_real"),
    ],
)
def test_bad_realistic_options_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_triplets(4, size=21, **kwargs)


def test_unknown_pool_is_refused():
    with pytest.raises(ValueError, match="unknown pool"):
        SimulationConfig(pool="tiny")
    with pytest.raises(ValueError, match="unknown pool"):
        pool_options("tiny")


@_FAST
@given(arrays(np.float64, st.integers(2, 60), elements=st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0])), st.data())
def test_average_precision_matches_sklearn(p_real, data):
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(p_real), max_size=len(p_real))))
    if not y.any():
        with pytest.raises(ValueError, match="at least one real"):
            average_precision(y, p_real)
        return
    assert average_precision(y, p_real) == pytest.approx(average_precision_score(y, p_real))


def test_the_realistic_pool_goes_from_the_command_line_to_the_data_and_the_saved_results(tmp_path):
    args = build_parser().parse_args(["simulate", "--pool", "realistic", "--labels", "crowd"])
    (config,) = simulation_configs(args)
    assert config.pool == "realistic"
    tiny = dataclasses.replace(config, pool_size=40, test_size=20, initial_labels=10, max_labels=20)
    data = prepare_data(tiny)
    assert data.pool_truth.mean() == pytest.approx(0.1) and data.test_truth.mean() == pytest.approx(0.1)
    balanced = prepare_data(dataclasses.replace(tiny, pool="balanced"))
    assert balanced.pool_truth.mean() == pytest.approx(0.5)
    # Saved runs keep their pool, so a re-render finds the right config.
    run = RunResult("balanced", 0, "crowd", [10, 20], [0.9, 0.95], 1.0, 0.99, "realistic", [0.5, 0.6])
    out = tmp_path / "al.json"
    markdown = report([tiny], [[run]], {"wall_seconds": 1.0, "threads": 1}, json_path=str(out))
    assert "Realistic pool, labels" in markdown and "| 0.6000 |" in markdown  # the last round's AP
    configs, per_config, _ = load_results(str(out))
    assert configs[0].pool == "realistic" and per_config[0][0].test_ap == [0.5, 0.6]


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "active_learning.py"
    spec = importlib.util.spec_from_file_location("bench_active_learning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_pool_rewrites_only_its_own_subsection_of_the_benchmark_doc(tmp_path):
    bench = _bench_module()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Active learning\n\nold balanced table\n\n## Next\n\nkept\n")
    bench.replace_subsection("realistic", "realistic run 1", doc)
    text = doc.read_text()
    assert text.index(bench.SUBSECTION_TITLES["realistic"]) < text.index(bench.SUBSECTION_TITLES["balanced"])
    assert "old balanced table" in text and "realistic run 1" in text and "## Next\n\nkept" in text
    bench.replace_subsection("realistic", "realistic run 2", doc)
    bench.replace_subsection("balanced", "balanced run 2", doc)
    text = doc.read_text()
    assert "realistic run 1" not in text and "old balanced table" not in text
    assert text.count(bench.INTRO) == 1 and "realistic run 2" in text and "balanced run 2" in text
    assert text.count("### ") == 2 and text.endswith("## Next\n\nkept\n")
