"""Follow-up questions in a real Chromium: a volunteer classifies 20 subjects with the main answer's key
and the follow-up's key only (the goal: under a minute), goes back once with Esc, then turns fast mode
on with F and answers with one key."""

import time

import pytest

from core import followups
from labeling.models import Vote
from tests.browser_support import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

N = 20


def test_twenty_subjects_with_main_and_followup_keys(page, live_server, workflow, make_subjects):
    questions = followups.default_followups(workflow.answers)
    for q in questions:
        q["mode"] = followups.OPTIONAL  # "What kind?" after real too, so every subject takes two keys
    workflow.followups = followups.validate(questions, workflow.answers)
    workflow.retirement_limit = 5
    workflow.save(update_fields=["followups", "retirement_limit"])
    types = {q["answer"]: [t["key"] for t in q["types"]] for q in workflow.followups}
    make_subjects(N + 1)
    page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    page.keyboard.press("Enter")  # closes the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    expected = {}
    started = time.perf_counter()
    for i in range(N):
        subject = int(page.get_attribute(".triplet", "data-subject"))
        answer = "bogus" if i % 3 else "real"
        digit = i % (len(types[answer]) + 1)  # 0 is "not sure"
        page.keyboard.press(answer[0])
        page.wait_for_selector(f"#followup-{answer}:not([hidden])")
        if i == 0:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "followups-what-kind.png", full_page=True)
        if i == 5:  # Esc goes back to the answers, and nothing is sent
            page.keyboard.press("Escape")
            page.wait_for_selector("#followup-bogus", state="hidden")
            assert page.is_visible("[data-main-answers]") and Vote.objects.count() == i
            page.keyboard.press(answer[0])
            page.wait_for_selector(f"#followup-{answer}:not([hidden])")
        page.keyboard.press(str(digit))
        page.wait_for_function(f"() => document.getElementById('counter').textContent.trim() === '{i + 1}'")
        expected[subject] = (answer, types[answer][digit - 1] if digit else followups.NOT_SURE)
    elapsed = time.perf_counter() - started
    print(f"\n{N} subjects with main and follow-up keys in {elapsed:.1f} s ({elapsed / N:.2f} s each)")

    # Fast mode: F, and the optional question is not asked; the answer goes at once.
    last = int(page.get_attribute(".triplet", "data-subject"))
    page.keyboard.press("f")
    page.wait_for_selector('[data-fast-mode][aria-pressed="true"]')
    page.keyboard.press("b")
    page.wait_for_function(f"() => document.getElementById('counter').textContent.trim() === '{N + 1}'")
    assert page.evaluate("() => localStorage.getItem('skyvote-fast-mode')") == "1"

    assert navigations == []  # htmx swapped every subject in: no reload
    stored = {v.subject_id: (v.answer, v.followup) for v in Vote.objects.all()}
    assert stored.pop(last) == ("bogus", "")
    assert stored == expected
    assert elapsed < 60, f"{N} subjects took {elapsed:.1f} s"
