"""The main volunteer flow in a real Chromium: keyboard only, no page reloads."""

import pytest

from labeling.models import Vote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_classify_five_subjects_with_the_keyboard(page, live_server, workflow, make_subjects):
    make_subjects(8)
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    shown = []
    keys = ["r", "b", "1", "2", "r"]
    for i, key in enumerate(keys, start=1):
        sid = page.get_attribute(".triplet", "data-subject")
        shown.append(sid)
        page.keyboard.press(key)
        page.wait_for_function(f"() => document.getElementById('counter').textContent.trim() === '{i}'")
    assert page.inner_text("#counter").strip() == "5"
    assert navigations == []  # htmx swapped the subjects in; the page never reloaded
    assert len(set(shown)) == 5
    assert Vote.objects.count() == 5
    assert sorted(Vote.objects.values_list("answer", flat=True)) == ["bogus", "bogus", "real", "real", "real"]
    assert all(v.viewport and v.started_at for v in Vote.objects.all())


def test_phone_width_keeps_buttons_usable(browser, live_server, workflow, make_subjects):
    make_subjects(2)
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.click("#tutorial-close")
    bogus = page.locator("button.answer.bogus")
    box = bogus.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375
    bogus.tap()
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    context.close()
    assert Vote.objects.get().answer == "bogus"
