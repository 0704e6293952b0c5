"""Stamp tools on the real/bogus page in a real Chromium: zoom (Z), invert (I) and the asinh preset change
all three stamps at once, and stay chosen for the next subject (htmx swap) and after a reload."""

import pytest

from labeling.models import Vote
from tests.browser_support import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


STAMPS = ".triplet img[data-stretch-zscale]"
# Every stamp: its src, whether it has loaded, and the zoom/invert actually drawn (computed style).
LOOK = """() => Array.from(document.querySelectorAll('.triplet img[data-stretch-zscale]')).map(img => ({
  role: img.dataset.role, src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0,
  transform: getComputedStyle(img).transform, filter: getComputedStyle(img).filter,
  note: (img.closest('figure').querySelector('.stamp-note') || {}).textContent || ''}))"""
ALL_ASINH_AND_LOADED = """() => {
  const imgs = Array.from(document.querySelectorAll('.triplet img[data-stretch-zscale]'));
  return imgs.length === 3 && imgs.every(img => img.getAttribute('src').includes('stretch=asinh')
    && img.complete && img.naturalWidth === 252);
}"""


def assert_zoomed_inverted_asinh(look):
    assert [stamp["role"] for stamp in look] == ["science", "reference", "difference"]
    for stamp in look:
        assert "stretch=asinh" in stamp["src"] and stamp["loaded"], stamp
        assert stamp["transform"].startswith("matrix(2, 0, 0, 2"), stamp  # 2× about the centre
        assert "invert(1)" in stamp["filter"], stamp
        assert stamp["note"].startswith("Inverted"), stamp
    # The difference keeps its colours' meaning, and its caption says so.
    assert "hue-rotate(180deg)" in look[2]["filter"] and "orange is still brighter" in look[2]["note"]


def test_zoom_invert_and_asinh_apply_to_all_three_and_stick(page, live_server, workflow, make_subjects):
    make_subjects(3)
    url = f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/"
    page.goto(url)
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    page.wait_for_selector("#stamp-tools", state="visible")
    before = page.evaluate(LOOK)
    assert all(
        s["transform"] == "none" and s["filter"] == "none" and "stretch=" not in s["src"] for s in before
    )

    page.keyboard.press("z")
    page.keyboard.press("i")
    page.click('#stamp-tools [data-stamp-stretch="asinh"]')
    page.wait_for_function(ALL_ASINH_AND_LOADED)
    look = page.evaluate(LOOK)
    assert_zoomed_inverted_asinh(look)
    assert all(new["src"] != old["src"] for new, old in zip(look, before, strict=True))
    assert page.inner_text("#stamp-zoom-level") == "2×"
    assert page.get_attribute('[data-stamp-stretch="asinh"]', "aria-pressed") == "true"
    assert page.get_attribute("#stamp-invert", "aria-pressed") == "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "classify-stamp-tools.png", full_page=True)

    first = page.get_attribute(".triplet", "data-subject")
    page.keyboard.press("r")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    assert page.get_attribute(".triplet", "data-subject") != first
    page.wait_for_function(ALL_ASINH_AND_LOADED)
    assert_zoomed_inverted_asinh(page.evaluate(LOOK))

    page.reload()
    page.wait_for_function(ALL_ASINH_AND_LOADED)
    assert_zoomed_inverted_asinh(page.evaluate(LOOK))
    # Z again: 4×; C cycles the preset (asinh → zscale: the stored PNG, no stretch in its URL).
    page.keyboard.press("z")
    page.keyboard.press("c")
    look = page.evaluate(LOOK)
    assert all(s["transform"].startswith("matrix(4, 0, 0, 4") and "stretch=" not in s["src"] for s in look)
    assert Vote.objects.get().answer == "real"


def test_an_answer_key_wins_over_a_tool_key(page, live_server, workflow, make_subjects):
    workflow.answers = [
        {"key": "real", "label": "Real", "shortcut": "R", "counts_as": "real"},
        {"key": "bogus", "label": "Bogus", "shortcut": "B", "counts_as": "bogus"},
        {"key": "interesting", "label": "Interesting", "shortcut": "I", "counts_as": ""},
    ]
    workflow.save(update_fields=["answers"])
    make_subjects(2)
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")
    page.wait_for_selector("#stamp-tools", state="visible")
    assert page.locator("#stamp-invert kbd").is_hidden()  # its key belongs to an answer here
    page.keyboard.press("i")
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    assert Vote.objects.get().answer == "interesting"
    assert page.evaluate("() => document.documentElement.dataset.stampInvert") == "0"
    page.click("#stamp-invert")  # the button still works
    assert page.evaluate("() => document.documentElement.dataset.stampInvert") == "1"
