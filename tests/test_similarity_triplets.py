"""Triplets from answers (including "no images are similar") and the evaluation metrics."""

import numpy as np
import pytest

from mlcore.embedding_train import Answer, evaluate, extract_triplets, pairwise_agreement, recall_at_k
from mlcore.galaxies import CLASSES, generate_cutouts, near_duplicate, simulate_answer


def test_k_chosen_of_15_gives_k_times_15_minus_k_triplets():
    candidates = tuple(range(100, 115))
    for k in range(1, 15):
        chosen = frozenset(candidates[:k])
        triplets = extract_triplets([Answer(comparison=1, candidates=candidates, chosen=chosen)]).triplets
        assert triplets.shape == (k * (15 - k), 3)
        assert set(triplets[:, 0]) == {1}
        assert set(triplets[:, 1]) == set(chosen)
        assert set(triplets[:, 2]) == set(candidates) - chosen
        assert len({tuple(t) for t in triplets}) == len(triplets)  # no duplicates


def test_none_similar_marks_all_15_as_dissimilar_and_all_chosen_gives_nothing():
    candidates = tuple(range(200, 215))
    result = extract_triplets([Answer(comparison=7, candidates=candidates, chosen=frozenset())])
    assert result.triplets.shape == (0, 3)
    assert sorted(map(tuple, result.none_pairs)) == [(7, c) for c in candidates]
    everything = extract_triplets([Answer(comparison=7, candidates=candidates, chosen=frozenset(candidates))])
    assert len(everything) == 0


def test_several_answers_add_up_and_chosen_must_be_a_candidate():
    candidates = tuple(range(10, 25))
    answers = [
        Answer(1, candidates, frozenset({10, 11})),  # 2 × 13
        Answer(2, candidates, frozenset()),  # 15 negatives
        Answer(3, candidates, frozenset({12})),  # 1 × 14
    ]
    result = extract_triplets(answers)
    assert len(result.triplets) == 26 + 14 and len(result.none_pairs) == 15
    with pytest.raises(ValueError, match="not among the candidates"):
        Answer(1, candidates, frozenset({99}))


def test_agreement_and_recall_on_hand_built_embeddings():
    # Subject 0 is the comparison; 1 and 2 point its way, 3 and 4 the other way.
    emb = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [-1, 0], [0, 1]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    row_of = {i: i for i in range(5)}
    right = Answer(0, (1, 2, 3, 4), frozenset({1, 2}))
    wrong = Answer(0, (1, 2, 3, 4), frozenset({3, 4}))
    assert pairwise_agreement(emb, row_of, [right]) == (1.0, 4)
    assert pairwise_agreement(emb, row_of, [wrong]) == (0.0, 4)
    assert pairwise_agreement(emb, row_of, [right, wrong])[0] == 0.5
    assert recall_at_k(emb, row_of, [right], k=2) == (1.0, 1)
    assert recall_at_k(emb, row_of, [wrong], k=2) == (0.0, 1)
    # "None similar" answers carry no pairs; unknown subjects are skipped, not guessed.
    assert np.isnan(pairwise_agreement(emb, row_of, [Answer(0, (1, 2), frozenset())])[0])
    assert pairwise_agreement(emb, row_of, [Answer(0, (1, 99), frozenset({1}))])[1] == 0
    metrics = evaluate(emb, row_of, [right])
    assert metrics["agreement_baseline"] == 0.5 and metrics["recall_at_5_baseline"] == pytest.approx(5 / 4)


def test_random_embeddings_agree_at_chance():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    answers = []
    for _ in range(400):
        ids = rng.choice(300, 16, replace=False)
        answers.append(
            Answer(int(ids[0]), tuple(int(i) for i in ids[1:]), frozenset(int(i) for i in ids[1:6]))
        )
    agreement, n_pairs = pairwise_agreement(emb, {i: i for i in range(300)}, answers)
    assert n_pairs == 400 * 5 * 10
    assert abs(agreement - 0.5) < 0.03


def test_galaxy_generator_is_seeded_and_simulated_volunteers_follow_the_hidden_class():
    a = generate_cutouts(14, seed=3, size=48)
    b = generate_cutouts(14, seed=3, size=48)
    assert np.array_equal(a.images, b.images) and a.classes == b.classes
    assert set(a.classes) == set(CLASSES) and a.images.shape == (14, 48, 48) and a.images.dtype == np.float32
    assert not np.array_equal(a.images, generate_cutouts(14, seed=4, size=48).images)
    rng = np.random.default_rng(0)
    copy = near_duplicate(a.images[0], rng)
    assert copy.shape == a.images[0].shape and not np.array_equal(copy, a.images[0])
    chosen = simulate_answer("spiral", ["spiral", "nebula"] * 50, rng, hit_rate=1.0, false_alarm_rate=0.0)
    assert chosen == list(range(0, 100, 2))
    assert simulate_answer("spiral", ["nebula"] * 15, rng, hit_rate=1.0, false_alarm_rate=0.0) == []
