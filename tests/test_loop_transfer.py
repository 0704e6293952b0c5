"""Transfer between surveys: a Rubin workflow's first round fine-tunes from a ZTF workflow's promoted
model (synthetic Rubin alerts ingested like real ones), trains one from scratch beside it, and the
model page and API report both held-out AUCs and the metrics per survey."""

import html as html_lib
import re

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse

from core.ingest import add_subject, rubin_record
from core.models import ModelVersion, ProjectMembership, Subject, Workflow
from jobs.models import Job
from loop import services as loop
from loop.arrays import ArrayCache, load_from_storage, subject_pixel_scale
from mlcore.prep import InputSpec
from mlcore.synth import generate_triplets
from mlcore.synth_rubin import alert_packet, generate_rubin
from tests.loop_support import label_subjects, make_pool, tiny_loop_settings

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def run_round(workflow, capture) -> Job:
    with capture(execute=True):
        job, created = loop.request_training(workflow)
    assert created
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    workflow.refresh_from_db()
    return job


def add_rubin(project, workflow, n: int, seed: int) -> tuple[list[Subject], np.ndarray]:
    """Synthetic Rubin alerts through the same ingestion as real ones (core.ingest.rubin_record)."""
    batch = generate_rubin(n, seed=seed, hard_fraction=0.2)
    subjects = []
    for i in range(n):
        record = rubin_record(alert_packet(batch, i), "synthetic", "10.0")
        subject, created = add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=record.external_id,
            array=record.array, metadata=record.metadata, source=record.source, object_id=record.object_id,
            truth_label="real" if batch.labels[i] else "bogus", truth_subtype=batch.subtypes[i],
            survey=record.survey, schema_version=record.schema_version, light_curve=record.light_curve,
            stamps=record.stamps, render=False,
        )  # fmt: skip
        assert created
        subjects.append(subject)
    return subjects, batch.labels.astype(np.int8)


def add_ztf(project, workflow, n: int, seed: int) -> tuple[list[Subject], np.ndarray]:
    batch = generate_triplets(n, seed=seed)
    subjects = []
    for i in range(n):
        subject, _ = add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=f"ztf-{seed}-{i}",
            array=batch.images[i], metadata={}, source="synthetic", render=False,
        )  # fmt: skip
        subjects.append(subject)
    # Counted as ZTF in the per-survey metrics (the display never sees these).
    Subject.objects.filter(pk__in=[s.pk for s in subjects]).update(survey=Subject.ZTF)
    return subjects, batch.labels.astype(np.int8)


def gold(subjects, truth):
    for subject, y in zip(subjects, truth, strict=True):
        Subject.objects.filter(pk=subject.pk).update(gold_label="real" if y else "bogus")


@pytest.fixture
def ztf_model(project, workflow, settings, tmp_path, django_capture_on_commit_callbacks):
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    make_pool(project, workflow, n=100, n_labeled=50, n_gold=24)
    run_round(workflow, django_capture_on_commit_callbacks)
    assert workflow.active_model.version == 1
    return workflow.active_model


def test_a_rubin_round_fine_tuned_from_a_ztf_model_reports_the_comparison_and_each_survey(
    client, owner, project, ztf_model, django_capture_on_commit_callbacks, django_user_model
):
    rubin = Workflow.objects.create(
        project=project, slug="rubin-rb", name="Rubin: real or bogus?", model_uncertainty_channel=True
    )
    labeled, truth = add_rubin(project, rubin, 44, seed=11)
    held, held_truth = add_rubin(project, rubin, 20, seed=12)
    pool, _ = add_rubin(project, rubin, 12, seed=13)
    ztf_held, ztf_truth = add_ztf(project, rubin, 12, seed=14)
    label_subjects([s.pk for s in labeled], truth)
    gold(held, held_truth)
    gold(ztf_held, ztf_truth)
    sample = Subject.objects.get(pk=labeled[0].pk)
    assert sample.survey == "rubin" and subject_pixel_scale(sample) == pytest.approx(0.2, rel=0.01)
    assert sample.light_curve and sample.metadata["stamps_file"]

    # The owner picks the ZTF workflow's promoted model on the Rubin workflow's model page.
    client.force_login(owner)
    models_url = reverse("loop:models", args=[project.slug, rubin.slug])
    page = client.get(models_url).content.decode()
    assert f'<option value="{ztf_model.pk}">ztf/rb v1' in page
    response = client.post(
        reverse("loop:start_from", args=[project.slug, rubin.slug]), {"model_version": ztf_model.pk}
    )
    assert response.status_code == 302
    rubin.refresh_from_db()
    assert rubin.start_from == ztf_model

    job = run_round(rubin, django_capture_on_commit_callbacks)
    version = job.model_version
    assert version.status == ModelVersion.ACTIVE and rubin.active_model == version
    transfer = version.metrics["transfer"]
    assert transfer["start_from"]["id"] == ztf_model.pk and transfer["start_from"]["label"] == "ztf/rb v1"
    # The ZTF model saw three channels; this workflow's input has the uncertainty channel too.
    assert transfer["start_from"]["input"] == "s63-p1-c3" and transfer["layers"]["adapted"] == [
        "conv.0.weight"
    ]
    fine, scratch = transfer["fine_tuned"], transfer["scratch"]
    assert 0 <= fine["roc_auc"] <= 1 and 0 <= scratch["roc_auc"] <= 1
    assert transfer["beat_scratch"] == (fine["roc_auc"] > scratch["roc_auc"])
    assert transfer["kept"] == ("fine_tuned" if fine["roc_auc"] >= scratch["roc_auc"] else "scratch")
    assert version.metrics["heldout"]["roc_auc"] == max(fine["roc_auc"], scratch["roc_auc"])
    assert transfer["time_budget_s_each"] == pytest.approx(10.0)  # half of the tiny round's 20 s
    by_survey = version.metrics["heldout_by_survey"]
    assert set(by_survey) == {"rubin", "ztf"}
    assert by_survey["rubin"]["n"] == len(held) and by_survey["ztf"]["n"] == len(ztf_held)
    assert set(fine["by_survey"]) == set(scratch["by_survey"]) == {"rubin", "ztf"}
    assert version.config["input"] == {"size": 63, "pixel_scale": 1.0, "uncertainty_channel": True}
    assert version.config["model"]["in_channels"] == 4 and version.config["start_from"]["id"] == ztf_model.pk
    # The pool was scored with the promoted model, from the cache of its own input.
    assert not Subject.objects.filter(pk__in=[s.pk for s in pool], model_score__isnull=True).exists()
    cache_ = ArrayCache.for_workflow(rubin.pk, InputSpec(uncertainty=True))
    assert cache_.directory.name == f"workflow-{rubin.pk}-s63-p1-c4" and len(cache_) >= len(labeled)
    assert cache_.read([labeled[0].pk]).shape == (1, 4, 63, 63)

    # The model page shows the comparison and the metrics per survey.
    page = html_lib.unescape(client.get(models_url).content.decode())
    assert 'data-testid="transfer"' in page
    assert f"{fine['roc_auc']:.4f}" in page and f"{scratch['roc_auc']:.4f}" in page
    assert "fine-tuned from ztf/rb v1" in page
    verdict = "Fine-tuning beat training from scratch" if transfer["beat_scratch"] else "did not beat"
    assert verdict in page
    table = re.search(r'data-testid="survey-metrics">(.*?)</table>', page, re.S).group(1)
    assert "<td>Rubin</td><td>20</td>" in table and "<td>ZTF</td><td>12</td>" in table
    assert "with the difference image's uncertainty as a fourth channel" in page

    # The saliency map of a Rubin subject comes from the 4-channel model.
    saliency = client.get(reverse("loop:saliency", args=[project.slug, rubin.slug, pool[0].pk]))
    assert saliency.status_code == 200 and saliency.content[:8] == b"\x89PNG\r\n\x1a\n"

    # A later round warm-starts from the workflow's own model: no second comparison.
    label_subjects([s.pk for s in pool[:6]], np.zeros(6, dtype=np.int8))
    second = run_round(rubin, django_capture_on_commit_callbacks).model_version
    assert "transfer" not in second.metrics and second.config["warm_start_from"] == version.version


def test_the_start_from_choice_through_the_api_and_who_may_make_it(
    client, owner, project, workflow, django_user_model
):
    from core.authentication import create_token

    other = Workflow.objects.create(project=project, slug="rubin-rb", name="Rubin")
    promoted = ModelVersion.objects.create(
        workflow=workflow, version=2, status=ModelVersion.ACTIVE, metrics={"heldout": {"roc_auc": 0.9}}
    )
    ModelVersion.objects.create(workflow=workflow, version=1, status=ModelVersion.REJECTED)
    _, key = create_token(owner, "tests")
    headers = {"Authorization": f"Bearer {key}"}
    url = reverse("api_workflow_start_from", args=[project.slug, other.pk])
    body = client.get(url, headers=headers).json()
    assert body["start_from"] is None and not body["applies"]
    assert [c["label"] for c in body["candidates"]] == ["ztf/rb v2"]  # only promoted models
    assert body["candidates"][0]["heldout_roc_auc"] == 0.9

    put = client.put(url, {"model_version": promoted.pk}, content_type="application/json", headers=headers)
    assert put.status_code == 200, put.content
    assert put.json()["start_from"]["id"] == promoted.pk and put.json()["applies"]
    bad = client.put(url, {"model_version": 10_000}, content_type="application/json", headers=headers)
    assert bad.status_code == 400 and "promoted model" in str(bad.json())
    # A workflow cannot start from its own model.
    own = reverse("api_workflow_start_from", args=[project.slug, workflow.pk])
    assert (
        client.put(
            own, {"model_version": promoted.pk}, content_type="application/json", headers=headers
        ).status_code
        == 400
    )

    viewer = django_user_model.objects.create_user("viewer", password="pw-123456789")
    ProjectMembership.objects.create(project=project, user=viewer, role="viewer")
    _, viewer_key = create_token(viewer, "tests")
    viewer_headers = {"Authorization": f"Bearer {viewer_key}"}
    seen = client.get(url, headers=viewer_headers).json()
    assert seen["start_from"]["id"] == promoted.pk and seen["candidates"] == []
    refused = client.put(
        url, {"model_version": None}, content_type="application/json", headers=viewer_headers
    )
    assert refused.status_code == 403
    client.force_login(viewer)
    assert (
        client.post(
            reverse("loop:start_from", args=[project.slug, other.slug]), {"model_version": ""}
        ).status_code
        == 403
    )

    cleared = client.put(url, {"model_version": None}, content_type="application/json", headers=headers)
    assert cleared.json()["start_from"] is None
    other.refresh_from_db()
    assert other.start_from is None
    workflow_body = client.get(reverse("api_workflow", args=[project.slug, other.pk]), headers=headers).json()
    assert workflow_body["show_light_curve"] is True and workflow_body["model_input_size"] == 63


def test_rubin_stamps_are_read_with_their_scale_sign_and_uncertainty(project, workflow):
    subjects, _ = add_rubin(project, workflow, 6, seed=21)
    loaded = dict((i, s) for i, s, _ in load_from_storage([s.pk for s in subjects], sigma=True))
    for subject in subjects:
        stamps = loaded[subject.pk]
        subject.refresh_from_db()
        assert stamps.pixel_scale == pytest.approx(0.2, rel=0.01)
        assert stamps.sigma is not None and stamps.sigma.shape == stamps.triplet.shape
        if subject.metadata.get("difference_sign") == "negative":
            # Negated so the candidate is bright, as ZTF sends negative detections.
            from core.ingest import load_subject_array

            np.testing.assert_array_equal(stamps.triplet[2], -load_subject_array(subject)[2])
    without = dict((i, s) for i, s, _ in load_from_storage([subjects[0].pk]))
    assert without[subjects[0].pk].sigma is None


def test_the_demo_seeds_a_rubin_workflow_whose_first_round_fine_tunes_from_the_ztf_model(
    settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.management import call_command

    import skyvote.celery

    settings.VAR_DIR = tmp_path
    monkeypatch.setattr(skyvote.celery, "declare_queues", lambda: None)
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    args = ["--subjects", "60", "--gold", "20", "--history", "40", "--no-similarity"]
    args += ["--rubin-subjects", "50", "--rubin-gold", "16", "--rubin-history", "30"]
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", *args)
    ztf = Workflow.objects.get(project__slug="ztf-demo", slug="real-or-bogus")
    rubin = Workflow.objects.get(project__slug="ztf-demo", slug="rubin-real-or-bogus")
    subjects = Subject.objects.filter(workflow=rubin)
    assert subjects.count() == 50 and set(subjects.values_list("survey", flat=True)) == {"rubin"}
    assert all(s.light_curve and s.metadata.get("stamps_file") for s in subjects[:5])
    assert Subject.objects.filter(workflow=ztf).exclude(light_curve=[]).count() == 60
    rounds = {j.workflow_id: j for j in Job.objects.filter(kind=Job.TRAIN)}
    assert rounds[ztf.pk].status == Job.SUCCEEDED, rounds[ztf.pk].error
    assert rounds[rubin.pk].status == Job.SUCCEEDED, rounds[rubin.pk].error
    ztf.refresh_from_db()
    rubin.refresh_from_db()
    assert rubin.start_from == ztf.active_model
    transfer = rubin.active_model.metrics["transfer"]
    assert transfer["start_from"]["label"] == f"ztf-demo/real-or-bogus v{ztf.active_model.version}"
    assert set(rubin.active_model.metrics["heldout_by_survey"]) == {"rubin"}
    # Run again: nothing new, no second round.
    call_command("seed_demo", *args)
    assert Job.objects.filter(kind=Job.TRAIN).count() == 2
