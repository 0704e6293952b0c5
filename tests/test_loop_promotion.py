"""Calibration and the promotion rule in a training round: the minimum held-out size (with the reason
on the model page), the owner's forced promotion, the paired-bootstrap comparison with the active
model, and the calibrated P(real) the pool is scored with. Two tiny rounds in all."""

import numpy as np
import pytest
from django.urls import reverse

from core.models import ModelVersion, Subject
from jobs.models import Job
from loop import services as loop
from loop.arrays import ArrayCache
from mlcore.calibration import apply_temperature
from skyvote import settings as project_settings
from tests.loop_support import make_pool, tiny_loop_settings

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def run_round(workflow, capture, **kwargs) -> Job:
    with capture(execute=True):
        job, created = loop.request_training(workflow, **kwargs)
    assert created
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    return job


def models_page(client, workflow) -> str:
    response = client.get(reverse("loop:models", args=[workflow.project.slug, workflow.slug]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_product_default_needs_200_held_out_items(monkeypatch):
    monkeypatch.delenv("SKYVOTE_MIN_HELDOUT", raising=False)
    assert loop.DEFAULTS["min_heldout"] == 200
    assert project_settings.SKYVOTE_LOOP["min_heldout"] == 200  # what a deployment gets unless it sets it


def test_refusal_forced_promotion_and_a_compared_round(
    client, owner, workflow, project, settings, tmp_path, django_capture_on_commit_callbacks
):
    tiny_loop_settings(settings, tmp_path, min_heldout=50, score_precision="float32")
    pool = make_pool(project, workflow, n=100, n_labeled=50, n_gold=24)
    client.force_login(owner)

    # Round 1: 24 held-out items where 50 are needed: registered, calibrated, not promoted.
    first = run_round(workflow, django_capture_on_commit_callbacks).model_version
    workflow.refresh_from_db()
    assert first.status == ModelVersion.REJECTED and workflow.active_model is None
    decision = first.metrics["promotion"]
    assert decision["promoted"] is False and decision["n_heldout"] == 24
    assert decision["reason"] == "Not promoted: only 24 held-out items, at least 50 needed."
    calibration = first.metrics["calibration"]
    assert calibration["cross_fitted"] and calibration["n"] == 24
    assert calibration["method"] in ("none", "temperature", "temperature+bias")
    assert first.metrics["heldout"]["ece"] == calibration["ece_calibrated"]
    assert calibration["ece_calibrated"] == calibration["ece_by_method"][calibration["method"]]
    assert (
        calibration["ece_calibrated"] <= calibration["ece_uncalibrated"]
    )  # cross-fitted "none" is the raw ECE
    html = models_page(client, workflow)
    assert "Not promoted: only 24 held-out items, at least 50 needed." in html
    assert (
        f'<b>{calibration["ece_calibrated"]:.3f}</b> <span class="muted">({calibration["ece_uncalibrated"]:.3f})'
        in html
    )
    assert "at least 50 held-out items" in html

    # The temperature is in the checkpoint, and the loaded model carries it.
    loaded = loop.load_model_version(first)
    assert (loaded.temperature, loaded.bias) == pytest.approx(
        (calibration["temperature"], calibration["bias"])
    )

    # The owner promotes it anyway: active, the pool scored with the calibrated P(real), and the page says why.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("loop:promote", args=[project.slug, workflow.slug, first.version]))
    assert response.status_code == 302
    first.refresh_from_db()
    workflow.refresh_from_db()
    assert workflow.active_model == first and first.status == ModelVersion.ACTIVE
    forced = first.metrics["promotion"]
    assert forced["promoted"] and forced["forced"]
    assert forced["reason"].startswith("Promoted by owner on ")
    assert "The round had decided: Not promoted: only 24 held-out items" in forced["reason"]
    assert "Promoted by owner on " in models_page(client, workflow)

    ids = np.asarray(pool.unlabeled[:20], dtype=np.int64)
    cache_ = ArrayCache.for_workflow(workflow.pk, loop.spec_of(loaded.model))
    raw = loop._heldout_logits(loaded.model, cache_, ids)
    stored = dict(Subject.objects.filter(pk__in=ids.tolist()).values_list("pk", "model_score"))
    scores = np.array([stored[int(i)] for i in ids])
    assert np.allclose(scores, apply_temperature(raw, loaded.temperature, loaded.bias), atol=1e-5)
    if abs(loaded.temperature - 1) > 0.05 or abs(loaded.bias) > 0.05:  # and not the uncalibrated one
        assert not np.allclose(scores, apply_temperature(raw, 1.0), atol=1e-3)

    # Round 2 (warm start, enough held-out items now): compared with v1 by a paired bootstrap.
    settings.SKYVOTE_LOOP = {**settings.SKYVOTE_LOOP, "min_heldout": 20}
    second = run_round(workflow, django_capture_on_commit_callbacks).model_version
    decision = second.metrics["promotion"]
    low, high = decision["difference_ci"]
    assert low <= decision["difference"] <= high
    assert decision["previous_auc"] == pytest.approx(first.metrics["heldout"]["roc_auc"])
    assert decision["promoted"] == (low >= -0.01)
    assert second.status == (ModelVersion.ACTIVE if decision["promoted"] else ModelVersion.REJECTED)
    assert " of the active v1; difference " in decision["reason"]
    assert decision["reason"].startswith("Promoted: AUC " if decision["promoted"] else "Not promoted: AUC ")
    assert decision["reason"] in models_page(client, workflow)
    # The held-out P(real) kept for the reliability plot is the calibrated one.
    model2 = loop.load_model_version(second)
    gold = np.asarray(pool.gold, dtype=np.int64)
    raw2 = loop._heldout_logits(
        model2.model, ArrayCache.for_workflow(workflow.pk, loop.spec_of(model2.model)), gold
    )
    kept = np.asarray(second.metrics["plot_data"]["curves"]["v2"])
    fitted = second.metrics["calibration"]
    assert np.allclose(kept, apply_temperature(raw2, fitted["temperature"], fitted["bias"]), atol=1e-5)
