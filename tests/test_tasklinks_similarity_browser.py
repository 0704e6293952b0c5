"""A paid annotator of a similarity batch in a real Chromium: the generic link, consent, three 15-tile tasks
answered with the keyboard only (a check task among them), and the completion code."""

import pytest

from panels import services as tasklinks
from panels.models import Assignment
from similarity.models import SimilarityTask, SimilarityVote
from similarity.views import TILE_KEYS
from tests.browser_support import SCREENSHOTS
from tests.similarity_support import similarity_workflow
from tests.tasklinks_support import landing_url, make_batch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_worker_completes_a_three_task_similarity_batch_with_the_keyboard(
    settings, page, live_server, project
):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    workflow = similarity_workflow(project, n_subjects=18)
    batch = make_batch(workflow, tasks_per_assignment=3, gold_share=0.34, n_assignments=1)

    page.goto(live_server.url + landing_url(batch, worker_id="PW-sim-1"))
    page.check("[data-testid=consent]")
    images, navigations = [], []
    page.on("response", lambda response: "/img/" in response.url and images.append(response.status))
    page.click("[data-testid=start]")
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    answered = {}
    for i in range(3):
        page.wait_for_function(
            f"() => document.querySelector('[data-testid=progress-text]').textContent.includes('{i} of 3')"
        )
        assert page.locator(".sim-candidate").count() == 15
        # The comparison and every tile image loaded (each under its own opaque URL).
        page.wait_for_function(
            "() => [...document.querySelectorAll('#sim-task img')].length === 16 && "
            "[...document.querySelectorAll('#sim-task img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        task = SimilarityTask.objects.get(pk=int(page.get_attribute("#sim-form", "data-task")))
        # The check tile on a check task, tile 2 otherwise: by its key, as a worker would.
        position = task.candidates.index(task.check_candidate_id) if task.check_candidate_id else 1
        page.keyboard.press(TILE_KEYS[position].lower())
        assert page.inner_text("#sim-selected-count") == "1 selected"
        if i == 0:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "panel-similarity-task.png", full_page=True)
        answered[task.pk] = task.candidates[position]
        page.keyboard.press("Enter")

    page.wait_for_selector("[data-testid=completion-code]")
    code = page.inner_text("[data-testid=completion-code]").strip()
    page.screenshot(path=SCREENSHOTS / "panel-similarity-done.png", full_page=True)
    assert len(navigations) == 1  # tasks swapped in by htmx; one navigation to the completion page
    assert len(images) >= 3 * 16 and set(images) == {200}

    assignment = Assignment.objects.get(worker_id="PW-sim-1")
    assert code == tasklinks.completion_code(assignment) and set(answered) == set(assignment.subject_ids)
    assert sum(1 for t in SimilarityTask.objects.filter(pk__in=answered) if t.check_candidate_id) == 1
    votes = SimilarityVote.objects.filter(participant=assignment.participant)
    assert {v.task_id: v.chosen for v in votes} == {task: [chosen] for task, chosen in answered.items()}
    assert all(v.viewport for v in votes)
