"""The embedding index returns the exact nearest neighbours (brute force, float16 matrix + exact re-rank)."""

import numpy as np
import pytest

from similarity.index import EmbeddingIndex, brute_force_top_k


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_hand_built_case():
    vectors = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [-1, 0, 0], [0.6, 0, 0.8]], dtype=np.float32)
    index = EmbeddingIndex([10, 11, 12, 13, 14], vectors)
    result = index.search([1, 0, 0], k=3)
    assert result.ids.tolist() == [10, 11, 14]
    assert result.scores == pytest.approx([1.0, 0.8, 0.6], abs=1e-3)
    assert index.search([1, 0, 0], k=2, exclude=[10]).ids.tolist() == [11, 14]
    assert index.search([1, 0, 0], k=99).ids.tolist() == [10, 11, 14, 12, 13]  # k capped at N
    with pytest.raises(ValueError, match="dimension"):
        index.search([1, 0], k=1)


def test_matches_float64_brute_force_over_the_stored_vectors():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 5000, 128)
    ids = rng.permutation(100_000)[:5000]
    index = EmbeddingIndex(ids, vectors)
    stored = index.matrix.float().numpy()  # what the index holds (float16 storage)
    for q in range(20):
        query = vectors[q] + 0.3 * _unit(rng, 1, 128)[0]
        got = index.search(query, k=10)
        want = brute_force_top_k(ids, stored, query, 10, normalise_vectors=False)
        assert got.ids.tolist() == want.ids.tolist()
        assert np.allclose(got.scores, want.scores, atol=1e-5)


def test_near_ties_below_float16_resolution_are_ordered_exactly():
    # 200 vectors whose similarities to the query differ by ~1e-4, below the float16 output
    # resolution near 1.0 (≈ 5e-4): only the exact re-rank can order them.
    rng = np.random.default_rng(1)
    base = np.zeros(64, dtype=np.float32)
    base[0] = 1.0
    angles = np.sort(rng.uniform(0.0, 0.03, 200))
    vectors = np.zeros((200, 64), dtype=np.float32)
    vectors[:, 0] = np.cos(angles)
    vectors[:, 1] = np.sin(angles)
    distractors = _unit(rng, 3000, 64)
    all_vectors = np.concatenate([vectors, distractors])
    ids = np.arange(len(all_vectors)) + 1
    index = EmbeddingIndex(ids, all_vectors)
    got = index.search(base, k=50)
    want = brute_force_top_k(ids, index.matrix.float().numpy(), base, 50, normalise_vectors=False)
    assert got.ids.tolist() == want.ids.tolist()


def test_exact_duplicates_tie_by_smaller_id_and_ids_must_be_unique():
    v = np.array([[0, 1], [0, 1], [1, 0]], dtype=np.float32)
    assert EmbeddingIndex([7, 3, 5], v).search([0, 1], k=2).ids.tolist() == [3, 7]
    with pytest.raises(ValueError, match="unique"):
        EmbeddingIndex([1, 1, 2], v)
