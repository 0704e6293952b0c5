"""Approximate similarity search: faiss IVF candidates re-ranked exactly (similarity.index), the index
build job and its use by search (similarity.services)."""

import hashlib
import io

import numpy as np
import pytest

from similarity.index import RETRAIN_GROWTH, ApproximateIndex, EmbeddingIndex, brute_force_top_k

DIM = 16


def clustered(n, *, dim=DIM, clusters=20, spread=0.35, seed=0):
    """Unit vectors around random cluster centres: the structure of a trained embedding, small."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    vectors = clustered(3000 + 60, seed=1)
    ids = np.arange(3000, dtype=np.int64) * 7 + 5  # not row numbers
    return ids, vectors[:3000], vectors[3000:]


@pytest.fixture(scope="module")
def approx_index(data):
    ids, vectors, _ = data
    index = EmbeddingIndex(ids, vectors)
    index.approx_min = 0
    index.build_ivf(seed=0)
    return index


def stored(index):
    return index.ids, index.matrix.float().numpy()


def test_ivf_with_every_list_probed_returns_exactly_the_exact_top_k(data, approx_index):
    ids, vectors, queries = data
    default = approx_index.ivf.nprobe
    approx_index.ivf.nprobe = approx_index.ivf.nlist
    try:
        assert approx_index.uses_approximate and approx_index.ivf.nlist > 1
        matrix_ids, matrix = stored(approx_index)
        for q in queries[:20]:
            got = approx_index.search(q, 15)
            want = brute_force_top_k(matrix_ids, matrix, q, 15, normalise_vectors=False)
            assert got.ids.tolist() == want.ids.tolist()
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        # The query's own id is left out, as in exact search.
        own = int(ids[0])
        got = approx_index.search(vectors[0], 5, exclude=[own])
        assert own not in got.ids.tolist() and len(got.ids) == 5
        assert got.ids.tolist() == approx_index.search(vectors[0], 6).ids.tolist()[1:]
    finally:
        approx_index.ivf.nprobe = default


def test_recall_at_15_at_the_default_settings_on_clustered_vectors(data):
    ids, vectors, queries = data
    index = EmbeddingIndex(ids, vectors)
    exact = [set(index.search(q, 15).ids.tolist()) for q in queries]
    index.approx_min = 0
    ivf = index.build_ivf()
    assert ivf.nprobe < ivf.nlist  # really approximate
    found = [
        len(set(index.search(q, 15).ids.tolist()) & truth) / 15
        for q, truth in zip(queries, exact, strict=True)
    ]
    assert np.mean(found) >= 0.95


def test_below_the_threshold_search_is_exact_even_with_a_coarse_ivf(data):
    ids, vectors, queries = data
    index = EmbeddingIndex(ids, vectors)
    index.build_ivf(nlist=64, nprobe=1)
    matrix_ids, matrix = stored(index)
    want = [
        brute_force_top_k(matrix_ids, matrix, q, 15, normalise_vectors=False).ids.tolist() for q in queries
    ]
    index.approx_min = 0
    assert index.uses_approximate
    assert any(index.search(q, 15).ids.tolist() != w for q, w in zip(queries, want, strict=True))  # it misses
    index.approx_min = len(index) + 1
    assert not index.uses_approximate
    assert [index.search(q, 15).ids.tolist() for q in queries] == want


def test_incremental_add_finds_new_vectors_without_retraining(data):
    ids, vectors, queries = data
    index = EmbeddingIndex(ids[:500], vectors[:500])
    index.approx_min = 0
    ivf = index.build_ivf()
    centroids = ivf.index.quantizer.reconstruct_n(0, ivf.nlist).copy()
    new_ids = np.array([1, 2, 3], dtype=np.int64)
    assert index.add(new_ids, queries[:3]) == 3
    assert index.add(new_ids[:1], queries[:1]) == 0  # known ids are skipped
    assert len(index) == len(ivf) == 503
    assert index.ivf is ivf and ivf.trained_size == 500
    np.testing.assert_array_equal(ivf.index.quantizer.reconstruct_n(0, ivf.nlist), centroids)
    for item, q in zip(new_ids, queries[:3], strict=True):
        assert int(index.search(q, 1).ids[0]) == item
        np.testing.assert_allclose(index.vector(item), q, atol=1e-3)

    # Grown RETRAIN_GROWTH-fold since training: the IVF is retrained on everything.
    more = int(RETRAIN_GROWTH * 500) - len(index)
    index.add(ids[500 : 500 + more], vectors[500 : 500 + more])
    assert index.ivf is ivf and len(ivf) == RETRAIN_GROWTH * 500  # not yet
    index.add(ids[500 + more : 501 + more], vectors[500 + more : 501 + more])
    assert index.ivf is not ivf and index.ivf.trained_size == len(index) == len(index.ivf)
    assert int(index.search(vectors[500 + more], 1).ids[0]) == int(ids[500 + more])


def test_an_ivf_of_the_stored_rows_gets_the_rows_added_since(data):
    ids, vectors, queries = data
    index = EmbeddingIndex(ids[:300], vectors[:300])
    index.approx_min = 0
    index.add([1, 2], queries[:2])
    ivf = index.build_ivf(initial_only=True)
    assert ivf.trained_size == 300 and len(ivf) == len(index) == 302
    assert int(index.search(queries[1], 1).ids[0]) == 2


def test_the_ivf_survives_a_round_trip_through_bytes(data, approx_index):
    ivf = approx_index.ivf
    copy = ApproximateIndex.from_bytes(ivf.to_bytes(), trained_size=ivf.trained_size, nprobe=ivf.nprobe)
    assert (len(copy), copy.nlist, copy.nprobe) == (len(ivf), ivf.nlist, ivf.nprobe)
    q = data[2][0]
    np.testing.assert_array_equal(copy.candidates(q, 50), ivf.candidates(q, 50))
    with pytest.raises(ValueError):
        EmbeddingIndex(data[0][:10], data[1][:10]).attach_ivf(copy)  # not this index's rows


# ---------------------------------------------------------------------------------------------
# The build job and search through the site


def _active_version(workflow, subjects, vectors):
    """An active embedding version whose index holds `vectors` for `subjects` (no training round)."""
    from django.core.files.base import ContentFile

    from core.models import ModelVersion
    from core.storage import private_storage, random_name
    from mlcore.checkpoint import save_checkpoint
    from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet
    from similarity.index import pair_cosine_quantiles

    def put(suffix, data):
        return private_storage().save(random_name(f"models/{workflow.pk}/t-", suffix), ContentFile(data))

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()

    model = EmbeddingNet(EmbeddingConfig(input_size=16, channels=(4, 8), embedding_dim=DIM, projection_dim=8))
    buffer = io.BytesIO()
    save_checkpoint(buffer, model, metadata={"workflow": workflow.pk, "version": 1})
    checkpoint = buffer.getvalue()
    return ModelVersion.objects.create(
        workflow=workflow,
        kind=ModelVersion.EMBEDDING,
        version=1,
        status=ModelVersion.CANDIDATE,
        artifact=put(".pt", checkpoint),
        artifact_sha256=hashlib.sha256(checkpoint).hexdigest(),
        metrics={"n_subjects": len(subjects)},
        config={
            "model": model.config.to_dict(),
            "index": {
                "vectors": put(".npy", npy(vectors.astype(np.float16))),
                "ids": put(".npy", npy(np.array([s.pk for s in subjects], dtype=np.int64))),
                "dim": DIM,
                "calibration": pair_cosine_quantiles(vectors.astype(np.float16).astype(np.float32)),
            },
        },
    )


@pytest.mark.django_db
def test_promotion_builds_the_index_by_a_job_and_search_uses_it(
    project, owner, client, settings, django_capture_on_commit_callbacks
):
    from core.models import ModelVersion
    from jobs.models import Job
    from similarity.services import clear_caches, load_index, search
    from similarity.training import INDEX_BUILD, activate_embedding
    from tests.similarity_support import similarity_workflow

    clear_caches()
    settings.SKYVOTE_SIMILARITY = {**settings.SKYVOTE_SIMILARITY, "index": {"approx_min_subjects": 10}}
    workflow = similarity_workflow(project, n_subjects=24)
    subjects = list(workflow.subjects.order_by("pk"))
    vectors = clustered(len(subjects), clusters=4, seed=3)
    # The last subject arrived after the round: it is not in the stored index.
    version = _active_version(workflow, subjects[:-1], vectors[:-1])
    with django_capture_on_commit_callbacks(execute=True):
        activate_embedding(version)
    job = Job.objects.get(workflow=workflow, kind=INDEX_BUILD)
    assert job.status == Job.SUCCEEDED and f"{len(subjects) - 1} vectors" in job.message
    version.refresh_from_db()
    ivf_meta = version.config["index"]["ivf"]
    assert ivf_meta["trained_size"] == len(subjects) - 1 and ivf_meta["name"].endswith(".faiss")
    assert version.config["index"]["calibration"]  # kept next to it

    # A fresh web process: the stored IVF is loaded in the background, search is exact meanwhile.
    clear_caches()
    version = ModelVersion.objects.get(pk=version.pk)
    index = load_index(version)
    assert index.ivf_ready.wait(10) and index.uses_approximate and len(index.ivf) == len(index)

    client.force_login(owner)
    page = client.get(
        f"/similarity/p/{project.slug}/search/", {"subject": subjects[0].external_id, "top_k": 5}
    )
    hits = page.context["hits"]
    want = brute_force_top_k(index.ids, index.matrix.float().numpy(), vectors[0], 6, normalise_vectors=False)
    assert [h.subject.pk for h in hits] == [i for i in want.ids.tolist() if i != subjects[0].pk][:5]

    # Searching by the new subject embeds it and adds it to the index and its IVF.
    hits, _ = search(workflow, subject=subjects[-1], top_k=3)
    assert len(hits) == 3 and subjects[-1].pk not in [h.subject.pk for h in hits]
    assert index.vector(subjects[-1].pk) is not None and len(index.ivf) == len(index) == len(subjects)
    assert load_index(version).ivf is index.ivf  # the same cached index, no rebuild


@pytest.mark.django_db
def test_no_index_job_below_the_threshold(project, settings, django_capture_on_commit_callbacks):
    from jobs.models import Job
    from similarity.services import build_search_index, clear_caches
    from similarity.training import INDEX_BUILD, activate_embedding
    from tests.similarity_support import similarity_workflow

    clear_caches()
    settings.SKYVOTE_SIMILARITY = {**settings.SKYVOTE_SIMILARITY, "index": {"approx_min_subjects": 1000}}
    workflow = similarity_workflow(project, n_subjects=12)
    subjects = list(workflow.subjects.order_by("pk"))
    version = _active_version(workflow, subjects, clustered(len(subjects), seed=4))
    with django_capture_on_commit_callbacks(execute=True):
        activate_embedding(version)
    assert not Job.objects.filter(kind=INDEX_BUILD).exists()
    assert "search stays exact" in build_search_index(version)
    version.refresh_from_db()
    assert "ivf" not in version.config["index"]
