"""A rare gem in a real Chromium, keyboard only: G flags the subject and opens the note, the note is
typed (its letters never answer), Esc leaves it so the answer keys work again, the answer goes with
the flag, the next subject's control starts unflagged, and "My classifications" lists the gem."""

import os
import random
from pathlib import Path

import pytest

from core.models import GemFlag, Subject, Workflow
from labeling.models import Vote
from similarity.models import SimilarityVote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parent.parent
# var/ is ignored by git; SKYVOTE_SCREENSHOT_DIR puts them elsewhere (a CI artefact folder).
SCREENSHOTS = Path(os.environ.get("SKYVOTE_SCREENSHOT_DIR") or REPO / "var" / "screenshots")

NOTE = "a ring around a faint galaxy, bright on the right"  # r and b in it: never answers


def test_flag_a_gem_with_the_keyboard_and_find_it_on_my_page(page, live_server, workflow, make_subjects):
    make_subjects(3)
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    toggle = page.locator("[data-testid=gem-toggle]")
    assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "false"
    assert page.locator("[data-testid=gem-note]").is_hidden()
    answered = page.get_attribute(".triplet", "data-subject")

    page.keyboard.press("g")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'gem-note'")
    assert toggle.get_attribute("aria-pressed") == "true"
    page.keyboard.type(NOTE)
    assert page.input_value("[data-testid=gem-note]") == NOTE  # no "g" from the key that opened it
    assert page.inner_text("#counter").strip() == "0"  # its r's and b's were typed, not answered
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "classify-rare-gem-note.png", full_page=True)

    page.keyboard.press("Escape")  # leaves the note: the answer keys work again
    page.wait_for_function("() => document.activeElement && document.activeElement.id !== 'gem-note'")
    page.keyboard.press("b")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    page.wait_for_function(f"() => document.querySelector('.triplet').dataset.subject !== '{answered}'")

    # The next subject's control starts again: not pressed, no note, nothing sent with the next answer.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=gem-toggle]').getAttribute('aria-pressed') === 'false'"
    )
    assert page.locator("[data-testid=gem-note]").is_hidden()
    assert page.input_value("input[name=gem]") == "" and page.input_value("[data-testid=gem-note]") == ""
    vote = Vote.objects.get()
    flag = GemFlag.objects.get()
    assert vote.answer == "bogus" and str(vote.subject_id) == answered
    assert flag.subject_id == vote.subject_id and flag.note == NOTE and flag.vote_key == vote.idempotency_key

    page.goto(f"{live_server.url}/me/")
    gems = page.locator("[data-testid=gems]")
    assert NOTE in gems.inner_text() and vote.subject.external_id in gems.inner_text()
    assert page.locator("[data-testid=gem-count]").inner_text().strip() == "1"
    page.screenshot(path=SCREENSHOTS / "me-rare-gems.png", full_page=True)


def test_on_the_similarity_page_g_flags_too_and_the_tiles_keep_their_keys(page, live_server, project):
    """The tiles' keys leave G free (their third row is Z–B), so G flags here as on the real/bogus page."""
    workflow = Workflow.objects.create(project=project, slug="sim", name="Similar", kind=Workflow.SIMILARITY)
    for i in range(16):
        Subject.objects.create(
            project=project, workflow=workflow, external_id=f"g{i}", random_key=random.random()
        )
    page.goto(f"{live_server.url}/similarity/p/{project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    toggle = page.locator("[data-testid=gem-toggle]")
    assert toggle.get_attribute("aria-keyshortcuts") == "G" and toggle.locator("kbd").is_visible()

    page.keyboard.press("b")  # tile 15
    assert page.get_attribute('.sim-candidate[data-key="B"]', "aria-pressed") == "true"
    assert toggle.get_attribute("aria-pressed") == "false"
    page.keyboard.press("g")
    assert toggle.get_attribute("aria-pressed") == "true"
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'gem-note'")
    page.keyboard.type("spiral with a ring")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")  # submits the selection, as always on this page
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    vote = SimilarityVote.objects.get()
    assert GemFlag.objects.get().note == "spiral with a ring" and vote.n_chosen == 1
    assert GemFlag.objects.get().subject_id == vote.task.comparison_id
