"""The classify page in a real Chromium: gold feedback over the answered subject's images (the answer
buttons do not move, the next key only dismisses it), and undo of the last answer with U or the button."""

import pytest

from core.models import Subject
from labeling.models import Vote
from tests.browser_support import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


OVERLAY = ".triplet > .feedback-overlay[role=status]"


def open_page(page, live_server, workflow):
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")


def gold(subjects):
    Subject.objects.filter(pk__in=[s.pk for s in subjects]).update(
        gold_label="real", gold_subtype="variable_star"
    )


def overlaps(a, b) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and (b["y"] < a["y"] + a["height"])
    )


def test_gold_feedback_stays_over_the_answered_images_and_the_buttons_do_not_move(
    page, live_server, settings, workflow, make_subjects
):
    settings.SKYVOTE_GOLD_FEEDBACK_MS = 600_000  # stays until a key or Next dismisses it
    gold(make_subjects(3))
    open_page(page, live_server, workflow)
    answered = page.get_attribute(".triplet", "data-subject")
    srcs = page.eval_on_selector_all(".triplet img", "imgs => imgs.map(i => i.getAttribute('src'))")
    buttons = page.locator("#vote-form .answers").bounding_box()

    page.keyboard.press("b")  # wrong: the experts said real
    page.wait_for_selector(OVERLAY)
    feedback = page.locator(OVERLAY)
    assert "Not quite." in feedback.inner_text() and "Variable star" in feedback.inner_text()
    assert page.get_attribute(".triplet", "data-subject") == answered
    assert page.eval_on_selector_all(".triplet img", "imgs => imgs.map(i => i.getAttribute('src'))") == srcs
    assert page.locator("#vote-form .answers").bounding_box() == buttons
    box = feedback.bounding_box()
    assert any(overlaps(box, page.locator(".triplet img").nth(i).bounding_box()) for i in range(3))
    assert page.locator("[data-testid=feedback]").count() == 1  # not also above the next subject
    assert page.inner_text("#counter").strip() == "1"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "classify-gold-feedback-in-place.png", full_page=True)

    page.keyboard.press("z")  # the stamp tools still look at the answered images
    assert page.locator(OVERLAY).count() == 1
    page.keyboard.press("r")  # only dismisses: never an answer to the next subject
    page.wait_for_function(f"() => document.querySelector('.triplet').dataset.subject !== '{answered}'")
    assert page.locator("[data-testid=feedback]").count() == 0
    assert page.inner_text("#counter").strip() == "1"
    assert list(Vote.objects.values_list("subject_id", "answer")) == [(int(answered), "bogus")]

    # The next gold answer: "Next" moves on just as well.
    second = page.get_attribute(".triplet", "data-subject")
    page.keyboard.press("r")
    page.wait_for_selector(OVERLAY)
    assert "Well spotted!" in page.inner_text(OVERLAY)
    page.click("[data-testid=feedback-next]")
    page.wait_for_function(f"() => document.querySelector('.triplet').dataset.subject !== '{second}'")
    assert Vote.objects.count() == 2


def test_gold_feedback_goes_by_itself_after_a_moment(page, live_server, settings, workflow, make_subjects):
    settings.SKYVOTE_GOLD_FEEDBACK_MS = 300
    gold(make_subjects(2))
    open_page(page, live_server, workflow)
    answered = page.get_attribute(".triplet", "data-subject")
    page.mouse.move(0, 0)  # the pointer on the feedback would hold it
    page.keyboard.press("r")
    page.wait_for_function(f"() => document.querySelector('.triplet').dataset.subject !== '{answered}'")
    assert page.locator("[data-testid=feedback]").count() == 0
    assert Vote.objects.count() == 1


def test_undo_with_the_key_and_the_button_returns_to_the_same_subject(
    page, live_server, workflow, make_subjects
):
    make_subjects(4)
    open_page(page, live_server, workflow)
    assert page.locator("[data-testid=undo]").count() == 0
    first = page.get_attribute(".triplet", "data-subject")
    buttons = page.locator("#vote-form .answers").bounding_box()
    page.keyboard.press("r")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    assert page.locator("[data-testid=undo]").is_visible()
    assert page.locator("#vote-form .answers").bounding_box()["y"] == buttons["y"]  # the button takes no room

    page.keyboard.press("u")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '0'")
    assert page.get_attribute(".triplet", "data-subject") == first
    assert page.locator("[data-testid=undo]").count() == 0
    assert Vote.objects.get().retracted

    page.keyboard.press("b")  # answered again: a new vote
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    page.click("[data-testid=undo]")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '0'")
    assert page.get_attribute(".triplet", "data-subject") == first
    assert list(Vote.objects.order_by("pk").values_list("answer", "retracted")) == [
        ("real", True),
        ("bogus", True),
    ]
    subject = Subject.objects.get(pk=first)
    assert (subject.vote_count, subject.answer_counts) == (0, {})


def test_undo_during_gold_feedback_takes_the_gold_answer_back(
    page, live_server, settings, workflow, make_subjects
):
    settings.SKYVOTE_GOLD_FEEDBACK_MS = 600_000
    gold(make_subjects(3))
    open_page(page, live_server, workflow)
    answered = page.get_attribute(".triplet", "data-subject")
    page.keyboard.press("b")
    page.wait_for_selector(OVERLAY)
    page.keyboard.press("u")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '0'")
    assert page.get_attribute(".triplet", "data-subject") == answered
    assert page.locator("[data-testid=feedback]").count() == 0
    assert Vote.objects.get().retracted
