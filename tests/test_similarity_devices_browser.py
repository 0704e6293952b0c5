"""The classify pages on a desktop and on a phone, in a real Chromium: the first-visit tutorial is a modal
dialog that leaves the page at its heading, the similarity wording is true in both layouts, and touch
screens show no keyboard hints (similarity and real/bogus)."""

import re

import pytest

from tests.browser_support import SCREENSHOTS
from tests.similarity_support import similarity_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


DEVICES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}
FIRST_VISIT = """() => {
  const dialog = document.getElementById('tutorial');
  const heading = document.querySelector('main h1').getBoundingClientRect();
  return {open: dialog.open, modal: dialog.matches(':modal'), scrollY: window.scrollY,
          headingTop: heading.top, headingBottom: heading.bottom, height: window.innerHeight};
}"""
VISIBLE_KBD = "() => Array.from(document.querySelectorAll('kbd')).filter(k => k.checkVisibility()).length"
SIDES = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def opens_modally_at_the_heading(page):
    page.wait_for_selector("#tutorial[open]")
    state = page.evaluate(FIRST_VISIT)
    assert state["open"] and state["modal"], state
    assert state["scrollY"] == 0, state
    assert 0 <= state["headingTop"] and state["headingBottom"] <= state["height"], state


def screenshot(page, name, device):
    """The whole page. Chromium drops the touch emulation (and its media queries) while Playwright takes
    a full-page shot of a mobile context, so on the phone the viewport is made as tall as the page."""
    if device != "phone":
        page.screenshot(path=SCREENSHOTS / name, full_page=True)
        return
    viewport = page.viewport_size
    page.set_viewport_size(
        {"width": viewport["width"], "height": page.evaluate("() => document.body.scrollHeight")}
    )
    page.screenshot(path=SCREENSHOTS / name)
    page.set_viewport_size(viewport)


def close_tutorial(page, device):
    if device == "phone":
        page.locator("#tutorial-close").tap()
    else:
        page.keyboard.press("Enter")
    page.wait_for_selector("#tutorial:not([open])", state="attached")


@pytest.mark.parametrize("device", DEVICES)
def test_classify_pages_fit_the_device(browser, live_server, project, workflow, make_subjects, device):
    sim = similarity_workflow(project, n_subjects=20)
    make_subjects(2)
    context = browser.new_context(**DEVICES[device])
    page = context.new_page()
    page.set_default_timeout(15000)
    width = DEVICES[device]["viewport"]["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{live_server.url}{sim.get_absolute_url()}")
    opens_modally_at_the_heading(page)
    tutorial_text = page.inner_text("#tutorial")
    assert "comparison image" in tutorial_text
    assert not SIDES.search(tutorial_text), tutorial_text
    close_tutorial(page, device)
    assert page.evaluate("() => window.scrollY") == 0
    page.wait_for_selector(".sim-candidate img")
    assert not SIDES.search(page.inner_text("body"))
    if device == "phone":
        # The comparison is above the grid here, hence no "left" anywhere; and no keys to press.
        comparison = page.locator(".sim-comparison").bounding_box()
        grid = page.locator(".sim-grid").bounding_box()
        assert comparison["y"] + comparison["height"] <= grid["y"]
        assert page.evaluate(VISIBLE_KBD) == 0
    else:
        comparison = page.locator(".sim-comparison").bounding_box()
        grid = page.locator(".sim-grid").bounding_box()
        assert comparison["x"] + comparison["width"] <= grid["x"]
        assert page.evaluate(VISIBLE_KBD) > 15  # a key on every tile, and the hints
    screenshot(page, f"classify-similarity-{width}px.png", device)
    # "How it works" opens it again, modally.
    page.click("[data-show-dialog=tutorial]")
    page.wait_for_selector("#tutorial[open]")
    assert page.evaluate("() => document.getElementById('tutorial').matches(':modal')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#tutorial:not([open])", state="attached")

    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    opens_modally_at_the_heading(page)
    if device == "phone":
        assert page.evaluate(VISIBLE_KBD) == 0
        assert "Tap Real, Bogus or Skip" in page.inner_text("#tutorial")
    else:
        assert "Press R for real" in page.inner_text("#tutorial")
    close_tutorial(page, device)
    page.wait_for_selector(".triplet img")
    if device == "phone":
        assert page.evaluate(VISIBLE_KBD) == 0
        assert page.locator("button.answer.real").is_visible()
        # Spreading two fingers over the stamps zooms all three in (static/skyvote/stamp_tools.js).
        box = page.locator(".triplet img").first.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        touch = page.context.new_cdp_session(page)

        def pinch(*gaps):
            moves = [("touchStart", gaps[0])] + [("touchMove", g) for g in gaps[1:]] + [("touchEnd", None)]
            for kind, gap in moves:
                points = (
                    [] if gap is None else [{"x": x - gap, "y": y, "id": 1}, {"x": x + gap, "y": y, "id": 2}]
                )
                touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
            return page.evaluate("() => document.documentElement.dataset.stampZoom")

        assert pinch(10, 16, 18) == "2"  # one step per clear spread
        assert page.inner_text("#stamp-zoom-level") == "2×"
        assert pinch(30, 15) == "1"  # pinching zooms out
    else:
        assert page.evaluate(VISIBLE_KBD) >= 6  # R 1, B 2, S 3 on the answers, Z C I on the stamp tools
    screenshot(page, f"classify-real-bogus-{width}px.png", device)
    context.close()
