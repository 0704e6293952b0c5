"""The owner's learning-loop pages: versions, plots, running job (htmx), train now / promote, saliency."""

import re

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.urls import reverse

from core.models import ModelVersion, ProjectMembership, Subject
from jobs.models import Job
from loop import services as loop
from tests.loop_support import make_pool, tiny_loop_settings

pytestmark = pytest.mark.django_db


def url(workflow, name, *extra):
    return reverse(f"loop:{name}", args=[workflow.project.slug, workflow.slug, *extra])


@pytest.fixture
def member(django_user_model, project):
    def make(role):
        user = django_user_model.objects.create_user(f"{role}-user", password="pw-123456789")
        if role != "stranger":
            ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


@pytest.fixture
def trained(workflow, project, settings, tmp_path, django_capture_on_commit_callbacks):
    cache.clear()
    tiny_loop_settings(settings, tmp_path)
    pool = make_pool(project, workflow, n=120, n_labeled=50, n_gold=24)
    with django_capture_on_commit_callbacks(execute=True):
        job, _ = loop.request_training(workflow)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    workflow.refresh_from_db()
    return pool


@pytest.mark.slow
def test_owner_page_shows_versions_metrics_plots_histogram_and_the_queue(client, owner, workflow, trained):
    client.force_login(owner)
    html = client.get(url(workflow, "models")).content.decode()
    version = workflow.active_model
    assert 'data-testid="active-version">v1<' in html
    assert f"{version.metrics['heldout']['roc_auc']:.4f}" in html
    for name in ("roc", "reliability", "learning_curve"):
        # Linked through the plot view (plots are in private storage), which serves the stored PNG.
        plot_url = reverse("loop:plot", args=[workflow.project.slug, workflow.slug, version.version, name])
        assert plot_url in html
        assert client.get(plot_url).getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
        version.refresh_from_db()
        assert version.metrics["plots"][name] not in html  # the stored name never reaches the page
    assert html.count('class="bar"') == 20  # uncertainty histogram over the pool
    top = re.findall(r"/model/subjects/(\d+)/", html)
    best = (
        Subject.objects.filter(workflow=workflow, status="active", gold_label="")
        .order_by("-priority")
        .first()
    )
    assert top and int(top[0]) == best.pk
    assert 'data-testid="train-now"' in html and ">Promote</button>" not in html  # v1 is already active

    # Per-subject view with score, uncertainty and an input-gradient saliency PNG.
    html = client.get(url(workflow, "subject", best.pk)).content.decode()
    assert f"{best.model_score:.3f}" in html and f"{best.model_uncertainty:.3f}" in html
    response = client.get(url(workflow, "saliency", best.pk))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    png = response.content
    assert png.startswith(b"\x89PNG")
    assert client.get(url(workflow, "saliency", best.pk)).content == png  # cached in storage


@pytest.mark.slow
def test_saliency_follows_the_pixels_that_matter(workflow, trained):
    from core.ingest import load_subject_array

    subject = Subject.objects.filter(workflow=workflow, truth_label="real").first()
    model = loop.load_model_version(workflow.active_model).model
    p_real, maps = loop.saliency_maps(model, load_subject_array(subject))
    assert maps.shape == (3, 63, 63) and 0.0 <= p_real <= 1.0
    assert maps.max() == pytest.approx(1.0) and maps.min() >= 0.0
    # Pixels outside the network's receptive field of the logit do not exist here, but the centre,
    # where the candidate is, carries more gradient than the border on average.
    centre = maps[:, 21:42, 21:42].mean()
    border = (maps.sum() - maps[:, 21:42, 21:42].sum()) / (maps.size - maps[:, 21:42, 21:42].size)
    assert centre > border


def test_running_job_panel_polls_and_reloads_when_the_round_ends(client, owner, workflow):
    client.force_login(owner)
    job, _ = loop.request_training(workflow)
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, progress=0.42, log="10:00:00 epoch 1/2\n")
    html = client.get(url(workflow, "models")).content.decode()
    assert 'hx-trigger="every 1s"' in html and 'value="42"' in html and "epoch 1/2" in html

    partial = client.get(url(workflow, "job") + f"?job={job.pk}", HTTP_HX_REQUEST="true")
    assert 'value="42"' in partial.content.decode() and "HX-Refresh" not in partial

    Job.objects.filter(pk=job.pk).update(status=Job.SUCCEEDED, progress=1.0)
    partial = client.get(url(workflow, "job") + f"?job={job.pk}", HTTP_HX_REQUEST="true")
    assert partial["HX-Refresh"] == "true"
    assert "every 1s" not in partial.content.decode()  # polling stops


def test_train_now_is_for_owners_and_coalesces(client, owner, workflow, member):
    viewer, stranger = member("viewer"), member("stranger")
    client.force_login(stranger)
    assert client.get(url(workflow, "models")).status_code == 404
    assert client.post(url(workflow, "train")).status_code == 404
    client.force_login(viewer)
    page = client.get(url(workflow, "models"))
    assert page.status_code == 200 and 'data-testid="train-now"' not in page.content.decode()
    assert client.post(url(workflow, "train")).status_code == 403
    assert not Job.objects.exists()

    client.force_login(owner)
    assert client.get(url(workflow, "train")).status_code == 405  # POST only
    response = client.post(url(workflow, "train"), {"force": "1"}, follow=True)
    job = Job.objects.get()
    assert job.kind == Job.TRAIN and job.params["force_promote"] and job.created_by == owner
    assert f"Training round #{job.pk} queued" in response.content.decode()
    response = client.post(url(workflow, "train"), follow=True)
    assert Job.objects.count() == 1 and "joins it" in response.content.decode()


def test_promote_refuses_a_corrupt_model_with_a_message(client, owner, workflow, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    version = ModelVersion.objects.create(workflow=workflow, version=1, artifact_sha256="0" * 64)
    version.artifact.save("v1.pt", ContentFile(b"junk"))
    client.force_login(owner)
    response = client.post(url(workflow, "promote", 1), follow=True)
    assert "changed since it was registered" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.active_model is None


def test_volunteers_never_see_the_models_opinion(client, workflow, project):
    subject = Subject.objects.create(
        project=project, workflow=workflow, external_id="x", model_score=0.987654, model_uncertainty=0.123456
    )
    html = client.get(reverse("labeling:classify", args=[project.slug, workflow.slug])).content.decode()
    assert f'value="{subject.pk}"' in html
    assert "0.987" not in html and "0.123" not in html and "P(real)" not in html
    assert client.get(url(workflow, "subject", subject.pk)).status_code == 302  # login first


def test_dashboard_links_each_real_bogus_workflow_to_its_loop_page(client, owner, workflow):
    client.force_login(owner)
    html = client.get(reverse("labeling:project_dashboard", args=[workflow.project.slug])).content.decode()
    assert url(workflow, "models") in html
