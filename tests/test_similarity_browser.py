"""The similarity task in a real Chromium: select three candidates (mouse and keys), submit with Enter,
then answer "no images are similar" with N — both votes stored exactly as given."""

import pytest

from similarity.models import SimilarityVote
from tests.similarity_support import similarity_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_select_three_then_none_similar(page, live_server, project):
    workflow = similarity_workflow(project, n_subjects=24)
    page.goto(f"{live_server.url}{workflow.get_absolute_url()}")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    first_task = page.get_attribute("#sim-form", "data-task")
    tiles = page.locator(".sim-candidate")
    assert tiles.count() == 15
    expected = [tiles.nth(0).get_attribute("data-subject"), tiles.nth(6).get_attribute("data-subject")]
    tiles.nth(0).click()  # mouse
    page.keyboard.press("w")  # the key shown on tile 7
    page.keyboard.press("b")  # tile 15 on, then off again, then on
    page.keyboard.press("b")
    page.keyboard.press("b")
    expected.append(tiles.nth(14).get_attribute("data-subject"))
    assert tiles.nth(0).get_attribute("aria-pressed") == "true"
    assert tiles.nth(6).get_attribute("aria-pressed") == "true"
    assert tiles.nth(1).get_attribute("aria-pressed") == "false"
    assert page.inner_text("#sim-selected-count") == "3 selected"

    # The magnifier opens a larger view without touching the selection; Escape closes it.
    page.locator(".sim-zoom").nth(3).click()
    page.wait_for_selector("#sim-zoom-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#sim-zoom-dialog:not([open])", state="attached")
    assert page.inner_text("#sim-selected-count") == "3 selected"

    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    second_task = page.get_attribute("#sim-form", "data-task")
    assert second_task != first_task
    assert page.locator('.sim-candidate[aria-pressed="true"]').count() == 0

    page.keyboard.press("n")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '2'")
    assert navigations == []  # htmx swapped the tasks in; no reloads

    first, second = SimilarityVote.objects.order_by("pk")
    assert first.task_id == int(first_task) and not first.none_similar
    assert first.chosen == sorted(int(s) for s in expected) and first.n_chosen == 3
    assert second.task_id == int(second_task) and second.none_similar and second.chosen == []
    assert first.viewport and first.started_at and first.participant_id == second.participant_id


def test_phone_width_grid_fits_and_taps_toggle(browser, live_server, project):
    workflow = similarity_workflow(project, n_subjects=20)
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}{workflow.get_absolute_url()}")
    page.click("#tutorial-close")
    for locator in (
        page.locator(".sim-candidate").nth(4),
        page.locator("#sim-none"),
        page.locator("#sim-submit"),
    ):
        box = locator.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375
    tile = page.locator(".sim-candidate").nth(2)
    tile.tap()
    assert tile.get_attribute("aria-pressed") == "true"
    page.locator("#sim-submit").tap()
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    context.close()
    vote = SimilarityVote.objects.get()
    assert vote.n_chosen == 1
