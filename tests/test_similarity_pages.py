"""The similarity pages through the Django test client: task page, htmx answers, owner page, search page."""

import re

import pytest

from core.models import ProjectMembership, Workflow
from jobs.models import Job
from similarity.models import SimilarityVote
from tests.similarity_support import similarity_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim_workflow(project):
    return similarity_workflow(project, n_subjects=20)


def _task_page(client, workflow):
    response = client.get(workflow.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    return html, int(re.search(r'name="task" value="(\d+)"', html).group(1))


def _ticket(html):
    return re.search(r'name="ticket" value="([^"]+)"', html).group(1)


def test_task_page_shows_comparison_15_keyed_tiles_tutorial_and_counter(client, sim_workflow):
    html, _task = _task_page(client, sim_workflow)
    assert html.count('class="sim-candidate"') == 15
    assert html.count('aria-pressed="false"') == 15
    for key in ("1", "5", "Q", "T", "Z", "B"):
        assert f'data-key="{key}"' in html
    assert 'data-testid="comparison"' in html and "No images are similar" in html
    assert '<dialog id="tutorial" data-first-visit="1"' in html  # similarity.js opens it, modally
    assert re.search(r'data-testid="counter">0<', html)
    client.post(f"/similarity/p/{sim_workflow.project.slug}/{sim_workflow.slug}/tutorial-seen/")
    html, _ = _task_page(client, sim_workflow)
    assert '<dialog id="tutorial" data-first-visit="0"' in html


def test_answers_via_htmx_swap_in_the_next_task(client, sim_workflow):
    html, task_id = _task_page(client, sim_workflow)
    chosen = re.findall(r'data-subject="(\d+)"', html)[:2]
    url = f"/similarity/p/{sim_workflow.project.slug}/{sim_workflow.slug}/answer/"
    key = re.search(r'name="key" value="([0-9a-f-]+)"', html).group(1)
    response = client.post(
        url,
        {
            "task": task_id,
            "chosen": ",".join(chosen),
            "key": key,
            "viewport": "800x600",
            "ticket": _ticket(html),
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="sim-task"') and "<html" not in body
    assert re.search(r'data-testid="counter">1<', body)
    next_task = int(re.search(r'name="task" value="(\d+)"', body).group(1))
    assert next_task != task_id
    vote = SimilarityVote.objects.get()
    assert (
        vote.chosen == sorted(int(c) for c in chosen) and not vote.none_similar and vote.viewport == "800x600"
    )
    # The same request again (a retry) stores nothing new.
    retry = {"task": task_id, "chosen": ",".join(chosen), "key": key, "ticket": _ticket(html)}
    assert client.post(url, retry, HTTP_HX_REQUEST="true").status_code == 200
    assert SimilarityVote.objects.count() == 1


def test_submitting_nothing_explains_and_keeps_the_task(client, sim_workflow):
    html, task_id = _task_page(client, sim_workflow)
    key = re.search(r'name="key" value="([0-9a-f-]+)"', html).group(1)
    url = f"/similarity/p/{sim_workflow.project.slug}/{sim_workflow.slug}/answer/"
    ticket = _ticket(html)
    response = client.post(
        url, {"task": task_id, "chosen": "", "key": key, "ticket": ticket}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "Select the similar images" in body and 'role="alert"' in body
    assert f'name="task" value="{task_id}"' in body and f'value="{key}"' in body and _ticket(body) == ticket
    assert not SimilarityVote.objects.exists()
    response = client.post(
        url, {"task": task_id, "none": "1", "key": key, "ticket": ticket}, HTTP_HX_REQUEST="true"
    )
    assert SimilarityVote.objects.get().none_similar


def test_workflow_urls_redirect_to_the_right_page(client, sim_workflow, workflow):
    real_bogus_here = client.get(f"/similarity/p/{workflow.project.slug}/{workflow.slug}/")
    assert real_bogus_here.status_code == 302 and real_bogus_here["Location"] == workflow.get_absolute_url()
    similarity_there = client.get(f"/p/{sim_workflow.project.slug}/{sim_workflow.slug}/")
    assert (
        similarity_there.status_code == 302
        and similarity_there["Location"] == sim_workflow.get_absolute_url()
    )


def test_owner_page_permissions_and_train_now(
    client, sim_workflow, owner, django_user_model, django_capture_on_commit_callbacks
):
    url = f"/similarity/p/{sim_workflow.project.slug}/{sim_workflow.slug}/model/"
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-123")
    ProjectMembership.objects.create(project=sim_workflow.project, user=viewer, role="viewer")
    stranger = django_user_model.objects.create_user("stranger", password="stranger-pass-123")
    client.force_login(stranger)
    assert client.get(url).status_code == 404
    client.force_login(viewer)
    page = client.get(url)
    assert page.status_code == 200 and b"train-now" not in page.content
    assert client.post(url + "train/").status_code == 403
    client.force_login(owner)
    page = client.get(url)
    assert page.status_code == 200 and b'data-testid="train-now"' in page.content
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url + "train/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"Round #" in response.content
    job = Job.objects.get(workflow=sim_workflow, kind=Job.EMBED)
    assert job.status == Job.QUEUED and job.created_by == owner
    assert client.get(url + "job/").status_code == 200
    dashboard = client.get(f"/p/{sim_workflow.project.slug}/").content.decode()
    assert url in dashboard and f"/similarity/p/{sim_workflow.project.slug}/search/" in dashboard


def test_search_page_for_readers_only_and_clear_errors(client, sim_workflow, owner, django_user_model):
    url = f"/similarity/p/{sim_workflow.project.slug}/search/"
    assert client.get(url).status_code == 302  # log in first
    client.force_login(django_user_model.objects.create_user("nobody", password="nobody-pass-123"))
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(url).status_code == 200
    response = client.post(url, {"workflow": sim_workflow.slug, "top_k": 5})
    assert "Upload an image" in response.content.decode()
    subject = sim_workflow.subjects.first()
    response = client.get(url, {"subject": subject.external_id})
    assert "no embedding yet" in response.content.decode()
    assert Workflow.objects.filter(kind=Workflow.SIMILARITY).count() == 1
