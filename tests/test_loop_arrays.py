"""The worker-side cache of preprocessed triplets the loop trains and scores from."""

import numpy as np
import pytest

from core.ingest import add_subject
from core.models import Subject
from loop.arrays import MAX_SEGMENTS, ArrayCache, load_from_storage
from mlcore.prep import preprocess_batch
from mlcore.synth import generate_triplets

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(project, workflow):
    batch = generate_triplets(12, seed=3)
    subjects = [
        add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=f"a{i}", array=batch.images[i],
            metadata={}, source="synthetic", render=False,
        )[0]
        for i in range(12)
    ]  # fmt: skip
    return subjects, batch.images


def test_fill_reads_storage_once_and_returns_preprocessed_triplets_in_any_order(stored, tmp_path):
    subjects, images = stored
    cache = ArrayCache(tmp_path / "c")
    ids = [s.pk for s in subjects]
    assert cache.fill(ids[:5], load_from_storage) == []
    assert cache.fill(ids, load_from_storage) == []  # only the 7 missing ones are read
    assert len(cache) == 12 and len(list((tmp_path / "c").glob("seg-*.ids.npy"))) == 2

    order = [ids[7], ids[0], ids[11], ids[3]]
    got = cache.read(order).astype(np.float32)
    expected = preprocess_batch(images[[7, 0, 11, 3]])
    assert got.shape == (4, 3, 63, 63)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # float16 storage
    chunks = list(cache.iter_chunks(np.array(ids[::-1]), chunk=5))
    assert sorted(int(i) for c, _ in chunks for i in c) == sorted(ids)
    for chunk_ids, x in chunks:
        np.testing.assert_array_equal(x, cache.read(chunk_ids))


def test_unreadable_arrays_are_skipped_with_a_reason_and_nothing_else_is_lost(stored, tmp_path):
    subjects, _ = stored
    broken = subjects[2]
    broken.data.storage.delete(broken.data.name)
    Subject.objects.filter(pk=subjects[4].pk).update(data="")
    cache = ArrayCache(tmp_path / "c")
    failures = dict(cache.fill([s.pk for s in subjects], load_from_storage))
    assert set(failures) == {broken.pk, subjects[4].pk}
    assert "a4" in failures[subjects[4].pk]
    assert len(cache) == 10
    with pytest.raises(KeyError, match=str(broken.pk)):
        cache.read([broken.pk])


def test_many_small_segments_are_compacted_without_losing_rows(tmp_path):
    cache = ArrayCache(tmp_path / "c")
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(MAX_SEGMENTS + 3, 3, 63, 63)).astype(np.float32)
    for i in range(len(raw)):
        cache.write_segment([100 + i], preprocess_batch(raw[i : i + 1]))
    cache.compact_if_needed()
    assert len(list((tmp_path / "c").glob("seg-*.ids.npy"))) == 1
    reopened = ArrayCache(tmp_path / "c")
    np.testing.assert_allclose(
        reopened.read(np.arange(100, 100 + len(raw))).astype(np.float32), preprocess_batch(raw), atol=2e-3
    )


def test_a_half_written_segment_is_ignored(tmp_path):
    cache = ArrayCache(tmp_path / "c")
    cache.write_segment([1, 2], preprocess_batch(np.ones((2, 3, 63, 63), np.float32)))
    # A worker killed after writing the arrays but before the ids file: no segment.
    (tmp_path / "c" / "seg-000002.npy").write_bytes(b"partial")
    assert len(ArrayCache(tmp_path / "c")) == 2
    assert list(ArrayCache(tmp_path / "c").missing([1, 2, 3])) == [3]
