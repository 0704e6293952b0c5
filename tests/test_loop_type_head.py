"""The type head in the web loop: which types a round learns, one round with typed labels, the pages.

One tiny training round (2 epochs on ~100 synthetic subjects) for the whole feature; the label rules
are checked without training.
"""

import numpy as np
import pytest
from django.urls import reverse

from core.followups import default_followup, type_keys
from core.models import ModelVersion, Subject
from jobs.models import Job
from loop import services as loop
from tests.loop_support import make_pool, tiny_loop_settings

pytestmark = [pytest.mark.django_db]

FOLLOWUPS = [default_followup("bogus", "bogus"), default_followup("real", "real", "off")]


def _with_types(workflow):
    workflow.followups = FOLLOWUPS
    workflow.save(update_fields=["followups"])
    return workflow


def test_type_labels_follow_the_expert_then_the_crowd(workflow, project, settings, tmp_path):
    tiny_loop_settings(settings, tmp_path, min_type_examples=2)
    _with_types(workflow)
    subjects = [
        Subject.objects.create(project=project, workflow=workflow, external_id=f"t{i}") for i in range(9)
    ]
    ids = [s.pk for s in subjects]
    rows = [
        {"decided_type": "ghost"},
        {"decided_type": "ghost"},
        {"decided_type": "cosmic_ray", "gold_label": "bogus", "gold_subtype": "ghost"},  # the expert wins
        {"decided_type": "cosmic_ray"},
        {"decided_type": "cosmic_ray"},
        {"decided_type": "not_sure"},  # "not sure" is no type
        {"decided_type": "hot_pixel"},  # one example: below the minimum, left out of the head
        {"gold_label": "bogus", "gold_subtype": "cosmic_ray"},
        {"gold_label": "bogus", "gold_subtype": "unknown_kind"},  # not a type of this workflow
    ]
    for pk, fields in zip(ids, rows, strict=True):
        Subject.objects.filter(pk=pk).update(**fields)
    train, heldout = np.array(ids[:7]), np.array(ids[7:])
    found = loop.type_labels(workflow, train, heldout)
    assert found.classes == ["ghost", "cosmic_ray"]  # the workflow's order, enough examples only
    assert found.train.tolist() == [0, 0, 0, 1, 1, -1, -1]
    assert found.heldout.tolist() == [1, -1]
    assert found.counts["ghost"] == 3 and found.counts["hot_pixel"] == 1 and found.counts["cosmic_ray"] == 2

    settings.SKYVOTE_LOOP = {**settings.SKYVOTE_LOOP, "min_type_examples": 3}
    none = loop.type_labels(workflow, train, heldout)
    assert none.classes == [] and "no type head" in none.note and (none.train == -1).all()
    workflow.followups = []
    workflow.save(update_fields=["followups"])
    assert "fewer than two types" in loop.type_labels(workflow, train, heldout).note


@pytest.mark.slow
def test_a_round_with_typed_labels_trains_a_type_head_and_the_pages_show_it(
    workflow, project, owner, client, settings, tmp_path, django_capture_on_commit_callbacks
):
    tiny_loop_settings(settings, tmp_path, min_type_examples=3)
    _with_types(workflow)
    workflow.model_input_size = 32  # a quarter of the pixels: the round is about the head, not the accuracy
    workflow.save(update_fields=["model_input_size"])
    pool = make_pool(project, workflow, n=120, n_labeled=70, n_gold=30, seed=1)
    truth_types = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "truth_subtype"))
    for pk in pool.labeled:
        Subject.objects.filter(pk=pk).update(decided_type=truth_types[pk])
    for pk in pool.gold:
        Subject.objects.filter(pk=pk).update(gold_subtype=truth_types[pk])

    with django_capture_on_commit_callbacks(execute=True):
        job, _ = loop.request_training(workflow)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    version = job.model_version
    assert version.status == ModelVersion.ACTIVE

    classes = version.config["model"]["type_classes"]
    assert len(classes) >= 2 and set(classes) <= set(type_keys(FOLLOWUPS))
    assert loop.load_model_version(version).model.type_out.out_features == len(classes)
    confusion = version.metrics["type_confusion"]
    expected_n = sum(truth_types[pk] in classes for pk in pool.gold)
    assert confusion["classes"] == classes and confusion["n"] == expected_n > 0
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (len(classes), len(classes)) and matrix.sum() == expected_n
    assert confusion["accuracy"] == pytest.approx(np.trace(matrix) / expected_n)
    assert version.metrics["type_head"]["n_typed_train"] == sum(
        truth_types[pk] in classes for pk in pool.labeled
    )

    # Scoring wrote each unretired subject's most likely type and its probability, in one pass.
    scored = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    types = list(scored.values_list("model_type", "model_type_p"))
    assert types and all(t in classes and 1 / len(classes) <= p <= 1 for t, p in types)
    assert sum(version.metrics["pool"]["predicted_types"].values()) == len(types)

    client.force_login(owner)
    page = client.get(reverse("loop:models", args=[project.slug, workflow.slug])).content.decode()
    assert 'data-testid="type-confusion"' in page and 'data-testid="type-accuracy"' in page
    assert "Held-out gold: expert type (rows)" in page and '<th scope="row">' in page
    first = scored.exclude(model_type="").order_by("-model_type_p").first()
    subject_url = reverse("loop:subject", args=[project.slug, workflow.slug, first.pk])
    assert subject_url in page  # a per-type example, linking to its saliency page
    subject_page = client.get(subject_url).content.decode()
    assert 'data-testid="model-type"' in subject_page

    # The type-uncertainty strategy ranks the pool by type entropy × P(bogus) (re-scoring, no training).
    workflow.acquisition_strategy = "type_entropy"
    workflow.save(update_fields=["acquisition_strategy"])
    with django_capture_on_commit_callbacks(execute=True):
        score_job, _ = loop.request_scoring(workflow)
    score_job.refresh_from_db()
    assert score_job.status == Job.SUCCEEDED, score_job.error
    rows = list(
        scored.order_by("-priority").values_list("acquisition_score", "model_score", "model_uncertainty")
    )
    acquisition = [a for a, _, _ in rows]
    assert acquisition == sorted(acquisition, reverse=True)
    assert all(0 <= a <= 1 - p + 1e-6 for a, p, _ in rows)  # weighted by P(bogus)
    assert any(abs(a - u) > 1e-3 for a, _, u in rows)  # not the real/bogus entropy
