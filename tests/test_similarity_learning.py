"""Learning the embedding: tiny training beats chance on held-out answers; a round registers a version,
rebuilds the index, feeds the active selection of candidates, and search returns near-duplicates first."""

import io

import numpy as np
import pytest
from astropy.io import fits
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from core.ingest import load_subject_array
from core.models import ModelVersion, Subject
from jobs.models import Job
from jobs.services import GPU, kind_of
from mlcore.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlcore.embedding_model import EmbeddingConfig, prepare_images
from mlcore.embedding_train import Answer, TrainSettings, train_embedding
from mlcore.galaxies import generate_cutouts, simulate_answer
from similarity.models import SimilarityTask
from similarity.selection import create_task, next_task
from similarity.services import request_embedding_round, search
from similarity.training import workflow_answers
from tests.similarity_support import TINY_TRAINING, answer_with_classes, participant, similarity_workflow

TINY_CONFIG = EmbeddingConfig(input_size=32, channels=(8, 16, 32), embedding_dim=32, projection_dim=16)


def _simulated_answers(ids, classes, rng, n):
    answers = []
    for _ in range(n):
        comparison = int(rng.choice(ids))
        candidates = [int(c) for c in rng.choice([i for i in ids if i != comparison], 15, replace=False)]
        chosen = simulate_answer(classes[comparison], [classes[c] for c in candidates], rng)
        answers.append(Answer(comparison, tuple(candidates), frozenset(candidates[p] for p in chosen)))
    return answers


def test_tiny_training_agrees_with_volunteers_above_chance():
    batch = generate_cutouts(84, seed=5, size=48)
    images = prepare_images(batch.images, 32)
    ids = list(range(1, 85))
    classes = dict(zip(ids, batch.classes, strict=True))
    rng = np.random.default_rng(1)
    train, heldout = _simulated_answers(ids, classes, rng, 60), _simulated_answers(ids, classes, rng, 40)
    result = train_embedding(
        images, ids, train, heldout, config=TINY_CONFIG,
        settings=TrainSettings(pretrain_epochs=3, finetune_epochs=6, batch_size=64, seed=0),
    )  # fmt: skip
    assert result.embeddings.shape == (84, 32)
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert result.n_triplets > 0 and result.metrics["heldout_n_pairs"] > 300
    # Chance is 0.5: the embedding orders held-out (chosen, not chosen) pairs like the volunteers.
    assert result.metrics["heldout_pairwise_agreement"] > 0.6
    assert result.metrics["heldout_recall_at_5"] > result.metrics["heldout_recall_at_5_baseline"]
    losses = [row["loss"] for row in result.history["finetune"]]
    assert losses[-1] < losses[0]


def test_checkpoint_round_trip_and_tampering_is_refused():
    from mlcore.embedding_model import EmbeddingNet

    model = EmbeddingNet(TINY_CONFIG)
    buffer = io.BytesIO()
    save_checkpoint(buffer, model, metadata={"note": "test"})
    loaded = load_checkpoint(buffer.getvalue(), kind="embedding", device="cpu")
    assert loaded.config == TINY_CONFIG and loaded.metadata == {"note": "test"}
    x = np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    import torch

    with torch.inference_mode():
        assert torch.allclose(model.eval()(torch.from_numpy(x)), loaded.model(torch.from_numpy(x)))
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    payload["state_dict"]["embedding.bias"] += 1.0
    tampered = io.BytesIO()
    torch.save(payload, tampered)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tampered.getvalue(), kind="embedding")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(b"not a checkpoint", kind="embedding")


def _scorable_heldout_answers(workflow) -> int:
    _, heldout = workflow_answers(workflow)
    return sum(0 < len(answer.chosen) < len(answer.candidates) for answer in heldout)


MIN_SCORABLE_HELDOUT = 6


@pytest.fixture
def trained(project, django_capture_on_commit_callbacks):
    """A 40-subject demo workflow, 30 answers by perfect volunteers, one tiny round run (eagerly)."""
    workflow = similarity_workflow(project, n_subjects=40)
    workflow.train_every = 0  # rounds only when asked, in these tests
    workflow.save(update_fields=["train_every"])
    volunteers = [participant(str(i)) for i in range(3)]
    answered = 0
    # At least 30 answers, and enough held-out answers that the held-out agreement can score (a chosen
    # and an unchosen candidate): tasks are random, a held-out set of "none are similar" answers only
    # would leave the agreement undefined, and with one or two the agreement's interval is so wide that
    # promotion's "not below random" check can refuse a good embedding by chance.
    while answered < 30 or _scorable_heldout_answers(workflow) < MIN_SCORABLE_HELDOUT:
        volunteer = volunteers[answered % 3]
        answer_with_classes(next_task(workflow, volunteer), volunteer)
        answered += 1
        assert answered < 600, "too few scorable held-out answers after 600 answers"
    with django_capture_on_commit_callbacks(execute=True):
        job, created = request_embedding_round(workflow, reason="test", train_settings=TINY_TRAINING)
    job.refresh_from_db()
    return workflow, job


@pytest.mark.django_db
def test_a_round_registers_an_active_version_that_tasks_and_search_use(trained, owner, django_user_model):
    # One test for what one round enables (tasks, then search): a round is the slow part.
    workflow, job = trained
    assert job.status == Job.SUCCEEDED, job.error
    version = ModelVersion.objects.get(workflow=workflow, kind=ModelVersion.EMBEDDING)
    assert job.model_version_id == version.pk and version.status == ModelVersion.ACTIVE, version.metrics.get(
        "promotion"
    )
    assert version.n_train > 0 and version.metrics["n_heldout_answers"] > 0
    assert 0.0 <= version.metrics["heldout_pairwise_agreement"] <= 1.0
    assert version.metrics["n_subjects"] == 40 and version.artifact_sha256
    index = version.config["index"]
    assert index["dim"] == 128 and index["vectors"].endswith(".npy")
    # Tasks made from now on use the embedding: mixed ranks, nearest neighbours included.
    task = create_task(workflow)
    assert task.strategy == SimilarityTask.EMBEDDING and task.model_version_id == version.pk
    assert len(task.candidates) == 15 and len(set(task.candidates)) == 15
    assert {"nearest", "uncertain", "mid", "random"} <= set(task.candidate_sources)
    hits, _ = search(workflow, subject=task.comparison, top_k=4)
    nearest = {c for c, s in zip(task.candidates, task.candidate_sources, strict=True) if s == "nearest"}
    assert nearest == {h.subject.pk for h in hits}
    _search_api_returns_the_near_duplicate_first(workflow, owner, django_user_model)


@pytest.mark.django_db
def test_owner_round_button_coalesces_and_a_second_round_warm_starts(
    trained, client, owner, django_capture_on_commit_callbacks
):
    workflow, first_job = trained
    client.force_login(owner)
    url = f"/similarity/p/{workflow.project.slug}/{workflow.slug}/model/"
    page = client.get(url)
    assert page.status_code == 200 and b"v1" in page.content and b"random (0.5)" in page.content
    Job.objects.filter(pk=first_job.pk).update(params={**first_job.params, "train_settings": TINY_TRAINING})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job, created = request_embedding_round(workflow, reason="test", train_settings=TINY_TRAINING)
        again, created_again = request_embedding_round(workflow, reason="test again")
    assert created and not created_again and again.pk == job.pk  # one open round per workflow
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    second = ModelVersion.objects.get(workflow=workflow, version=2)
    assert second.config["warm_start_from"] == 1
    assert second.metrics["previous_heldout_agreement"] is not None


@pytest.mark.django_db
def test_k_new_answers_trigger_a_round(project, settings, django_capture_on_commit_callbacks):
    settings.SKYVOTE_SIMILARITY = {"train": TINY_TRAINING}
    workflow = similarity_workflow(project, n_subjects=20)
    workflow.train_every = 4
    workflow.save(update_fields=["train_every"])
    volunteer = participant()
    for i in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            answer_with_classes(next_task(workflow, volunteer), volunteer)
        if i < 3:
            assert not Job.objects.filter(workflow=workflow, kind=Job.EMBED).exists()
    # The 4th answer queued a round; its dispatch ran it (eager Celery in tests).
    job = Job.objects.get(workflow=workflow, kind=Job.EMBED)
    assert job.params["answers_at_request"] == 4 and kind_of(Job.EMBED).queue == GPU
    assert job.status == Job.SUCCEEDED, job.error
    assert (
        ModelVersion.objects.get(workflow=workflow).n_train
        + ModelVersion.objects.get(workflow=workflow).metrics["n_heldout_answers"]
        == 4
    )
    workflow.refresh_from_db()
    assert workflow.labels_at_last_round == 4


@pytest.mark.django_db
def test_answers_given_while_a_round_waits_count_as_trained_on(
    project, settings, django_capture_on_commit_callbacks
):
    settings.SKYVOTE_SIMILARITY = {"train": TINY_TRAINING}
    workflow = similarity_workflow(project, n_subjects=20)
    workflow.train_every = 0  # no automatic round while the answers below arrive
    workflow.save(update_fields=["train_every"])
    volunteer = participant()
    for _ in range(4):
        answer_with_classes(next_task(workflow, volunteer), volunteer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job, _ = request_embedding_round(workflow, reason="test")
    assert job.params["answers_at_request"] == 4
    for _ in range(3):  # before a worker takes the round
        answer_with_classes(next_task(workflow, volunteer), volunteer)
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    workflow.refresh_from_db()
    assert workflow.labels_at_last_round == 7  # not 4: the next round waits for train_every new answers


def _fits_bytes(array):
    buffer = io.BytesIO()
    fits.PrimaryHDU(array).writeto(buffer)
    return buffer.getvalue()


def _search_api_returns_the_near_duplicate_first(workflow, owner, django_user_model):
    duplicate = (
        Subject.objects.filter(workflow=workflow, metadata__has_key="near_duplicate_of")
        .order_by("pk")
        .first()
    )
    original = Subject.objects.get(
        project=workflow.project, external_id=duplicate.metadata["near_duplicate_of"]
    )
    api = APIClient()
    api.force_authenticate(owner)
    url = "/similarity/api/search/"

    by_subject = api.post(
        url, {"project": workflow.project.slug, "subject": original.external_id, "top_k": 5}, format="json"
    )
    assert by_subject.status_code == 200, by_subject.content
    body = by_subject.json()
    assert body["model_version"] == 1 and len(body["results"]) == 5
    assert body["results"][0]["external_id"] == duplicate.external_id
    assert original.pk not in [r["subject"] for r in body["results"]]
    assert body["results"][0]["cosine"] >= body["results"][1]["cosine"]

    upload = SimpleUploadedFile("query.fits", _fits_bytes(load_subject_array(original)), "application/fits")
    by_fits = api.post(
        url, {"project": workflow.project.slug, "workflow": "similar", "file": upload, "top_k": 3}
    )
    assert by_fits.status_code == 200, by_fits.content
    top_two = {r["subject"] for r in by_fits.json()["results"][:2]}
    assert top_two == {original.pk, duplicate.pk}

    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        with default_storage.open(original.images["image"]) as handle, Image.open(handle) as png:
            png.convert("RGB").save(buffer, format=fmt)
        upload = SimpleUploadedFile(f"query.{fmt.lower()}", buffer.getvalue())
        response = api.post(url, {"project": workflow.project.slug, "file": upload, "top_k": 3})
        assert response.status_code == 200 and len(response.json()["results"]) == 3

    bad = api.post(url, {"project": workflow.project.slug, "file": SimpleUploadedFile("x.txt", b"hello")})
    assert bad.status_code == 400 and "FITS, PNG or JPEG" in bad.json()["detail"]
    missing = api.post(url, {"project": workflow.project.slug, "subject": "no-such-subject"}, format="json")
    assert missing.status_code == 400 and "No subject" in missing.json()["detail"]
    stranger = django_user_model.objects.create_user("stranger", password="x-pass-12345")
    api.force_authenticate(stranger)
    assert (
        api.post(
            url, {"project": workflow.project.slug, "subject": original.external_id}, format="json"
        ).status_code
        == 404
    )


@pytest.mark.django_db
def test_search_without_an_embedding_says_what_to_do(project, owner):
    workflow = similarity_workflow(project, n_subjects=20)
    api = APIClient()
    api.force_authenticate(owner)
    response = api.post(
        "/similarity/api/search/",
        {"project": project.slug, "subject": workflow.subjects.first().external_id},
        format="json",
    )
    assert response.status_code == 409 and "no embedding yet" in response.json()["detail"]


@pytest.mark.django_db
def test_a_round_without_answers_pretrains_and_enables_search(project, django_capture_on_commit_callbacks):
    workflow = similarity_workflow(project, n_subjects=20)
    with django_capture_on_commit_callbacks(execute=True):
        job, _ = request_embedding_round(workflow, reason="initial", train_settings=TINY_TRAINING)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    version = ModelVersion.objects.get(workflow=workflow)
    assert version.status == ModelVersion.ACTIVE and version.n_train == 0
    assert version.metrics.get("heldout_pairwise_agreement") is None and version.config["boundary"] is None
    query = workflow.subjects.order_by("pk").first()
    hits, used = search(workflow, subject=query, top_k=19)
    assert used.pk == version.pk and len(hits) == 19 and query.pk not in {h.subject.pk for h in hits}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert create_task(workflow).strategy == SimilarityTask.EMBEDDING
