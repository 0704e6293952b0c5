"""The demo is usable as soon as it starts: seeding trains the first models itself.

`seed_demo` runs the first classifier round and the first embedding round in its own process,
through the job system, with a small time budget, so the web server starts with a promoted model,
scores on the pool and a search index. Timing is measured by bench/demo_ready.py, not here.
"""

import io

import numpy as np
import pytest
import torch
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from core.models import ModelVersion, Subject, Workflow
from jobs.models import Job
from labeling.models import Vote
from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet
from mlcore.embedding_train import TrainSettings, _Clock, pretrain_simclr
from similarity.services import clear_caches, load_index
from tests.loop_support import tiny_loop_settings

# The command's smallest sizes: enough labels and gold for a round, a handful of cutouts.
SMALL = ["--subjects", "40", "--gold", "16", "--history", "24", "--no-rubin"]
SMALL += ["--similarity-subjects", "20", "--first-round-budget", "2"]


@pytest.fixture
def seeded(settings, tmp_path, monkeypatch):
    import skyvote.celery

    settings.VAR_DIR = tmp_path
    # The broker's queues are declared for the demo's workers; the tests run jobs eagerly, brokerless.
    monkeypatch.setattr(skyvote.celery, "declare_queues", lambda: None)
    cache.clear()
    clear_caches()
    tiny_loop_settings(settings, tmp_path)
    out = io.StringIO()
    call_command("seed_demo", *SMALL, stdout=out)
    return out.getvalue()


def _demo_client(client, django_user_model):
    client.force_login(django_user_model.objects.get(username="demo"))
    return client


@pytest.mark.django_db
def test_seeding_leaves_a_promoted_model_with_scores_and_a_searchable_embedding(
    seeded, client, django_user_model
):
    ztf = Workflow.objects.select_related("active_model").get(project__slug="ztf-demo", slug="real-or-bogus")
    similar = Workflow.objects.get(project__slug="ztf-demo", slug="similar")

    # The first classifier round ran through the job system, in the seeding process, and promoted.
    round_ = Job.objects.get(workflow=ztf, kind=Job.TRAIN)
    assert round_.status == Job.SUCCEEDED, round_.error
    assert round_.attempts == 1 and round_.params["train_config"]["time_budget_s"] == 2
    assert ztf.active_model is not None and ztf.active_model.status == ModelVersion.ACTIVE
    assert round_.model_version_id == ztf.active_model.pk
    assert ztf.active_model.config["train"]["time_budget_s"] == 2
    # Scores and a ranking on the unretired pool, for the selector and the model page.
    pool = Subject.objects.filter(workflow=ztf, status=Subject.ACTIVE)
    assert pool.exists() and not pool.filter(model_score__isnull=True).exists()
    assert pool.filter(priority__gt=0).exists()
    # "What kind?" after bogus (optional, the field guide's types), off after real; the simulated
    # history answers it, so the type aggregation has data.
    assert [(f["answer"], f["mode"]) for f in ztf.followups] == [("bogus", "optional"), ("real", "off")]
    typed = Vote.objects.filter(workflow=ztf).exclude(followup="")
    assert typed.filter(followup="not_sure").exists() and typed.exclude(followup="not_sure").exists()
    assert not typed.filter(answer="real").exists()

    # The first embedding round too: active, with an index of every cutout.
    embed = Job.objects.get(workflow=similar, kind=Job.EMBED)
    assert embed.status == Job.SUCCEEDED, embed.error
    version = ModelVersion.objects.get(workflow=similar, kind=ModelVersion.EMBEDDING)
    assert version.status == ModelVersion.ACTIVE and embed.model_version_id == version.pk
    index = load_index(version)
    assert set(index.row_of) == set(Subject.objects.filter(workflow=similar).values_list("pk", flat=True))

    # No round is left for the workers: they only take the later rounds.
    assert not Job.objects.filter(status__in=[Job.QUEUED, Job.RUNNING]).exists()
    assert "First round of 'real-or-bogus'" in seeded and "First round of 'similar'" in seeded

    # Search by image answers at once, by subject on the page and by uploaded image through the API.
    c = _demo_client(client, django_user_model)
    dup = Subject.objects.filter(workflow=similar, external_id__endswith="-dup").first()
    page = c.get(reverse("similarity:search", args=["ztf-demo"]), {"subject": dup.external_id})
    assert page.status_code == 200
    assert len(page.context["hits"]) == 12 and "error" not in page.context
    assert b'data-testid="results"' in page.content

    png = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 96)) * 255).astype(np.uint8)).save(png, format="PNG")
    found = c.post(
        reverse("similarity:api_search"),
        {
            "project": "ztf-demo",
            "file": SimpleUploadedFile("query.png", png.getvalue(), "image/png"),
            "top_k": 5,
        },
    )
    assert found.status_code == 200, found.content
    body = found.json()
    assert body["model_version"] == version.version and len(body["results"]) == 5

    # The model page shows the promoted version.
    model_page = c.get(reverse("loop:models", args=["ztf-demo", "real-or-bogus"]))
    assert model_page.status_code == 200

    # Seeding again (every `make demo`) trains nothing more.
    before = Job.objects.count(), ModelVersion.objects.count()
    out = io.StringIO()
    call_command("seed_demo", *SMALL, stdout=out)
    assert (Job.objects.count(), ModelVersion.objects.count()) == before
    assert "First round" not in out.getvalue()


@pytest.mark.django_db
def test_queue_mode_leaves_the_first_rounds_to_the_workers(settings, tmp_path, monkeypatch):
    import skyvote.celery

    settings.VAR_DIR = tmp_path
    monkeypatch.setattr(skyvote.celery, "declare_queues", lambda: None)
    monkeypatch.setenv("SKYVOTE_DEMO_FIRST_ROUNDS", "queue")
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    call_command("seed_demo", *SMALL, stdout=io.StringIO())
    open_rounds = Job.objects.filter(status=Job.QUEUED)
    assert set(open_rounds.values_list("kind", flat=True)) == {Job.TRAIN, Job.EMBED}
    assert not any("train_config" in job.params or "train_settings" in job.params for job in open_rounds)
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_demo_without_gold_of_both_classes_starts_without_a_model(settings, tmp_path, monkeypatch):
    """Too few held-out answers: the first round fails with the loop's reason, nothing is promoted,
    the seeding finishes and prints the URL (the normal promotion rules are not relaxed)."""
    import skyvote.celery

    settings.VAR_DIR = tmp_path
    monkeypatch.setattr(skyvote.celery, "declare_queues", lambda: None)
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    out = io.StringIO()
    args = ["--subjects", "40", "--gold", "0", "--history", "24", "--no-rubin", "--no-similarity"]
    call_command("seed_demo", *args, "--first-round-budget", "5", stdout=out)
    ztf = Workflow.objects.get(project__slug="ztf-demo", slug="real-or-bogus")
    assert ztf.active_model is None
    failed = Job.objects.get(workflow=ztf, kind=Job.TRAIN)
    assert failed.status == Job.FAILED and "held-out set" in failed.error
    assert "held-out set" in out.getvalue() and "Open http://" in out.getvalue()


def test_pretraining_stops_within_an_epoch_when_the_time_budget_is_spent():
    """The quick first round's budget is shorter than one epoch on a busy laptop: the budget is
    checked per batch, so an expired clock stops after one step instead of a whole epoch."""
    images = np.random.default_rng(1).random((32, 1, 32, 32)).astype(np.float32)
    settings_ = TrainSettings(batch_size=8, time_budget_s=3600.0)

    def pretrained(clock):
        torch.manual_seed(0)
        model = EmbeddingNet(EmbeddingConfig(input_size=32))
        start = {k: v.clone() for k, v in model.state_dict().items()}
        pretrain_simclr(
            model, images, epochs=1, settings=settings_, device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(0), clock=clock,
        )  # fmt: skip
        return start, model.state_dict()

    start, one_step = pretrained(_Clock(0.0))
    _, full_epoch = pretrained(_Clock(3600.0))
    changed = lambda a, b: any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # noqa: E731
    assert changed(start, one_step)  # it did train
    assert changed(one_step, full_epoch)  # but not the whole epoch
