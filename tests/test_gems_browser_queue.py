"""The Gems page in a real Chromium: a volunteer flagged two subjects with notes, an anomaly run
scored the pool, and the owner rates a page of 20 candidates with the keyboard; the next page's
order is then what the ratings taught the ranking."""

import uuid

import pytest
from django.urls import reverse

from core import gems as core_gems
from core.models import Participant
from gems import services
from gems.models import GemRating
from jobs.models import Job
from labeling.services import record_vote
from tests.browser_support import SCREENSHOTS
from tests.loop_support import tiny_loop_settings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTES = ("Two nuclei? <b>not bold</b>", "A ring around the host")


def row_ids(page) -> list[int]:
    return [
        int(i)
        for i in page.eval_on_selector_all("[data-gem-row]", "rows => rows.map(r => r.dataset.subject)")
    ]


def test_owner_rates_a_page_with_the_keyboard_and_the_next_page_reorders(
    page, live_server, settings, tmp_path, project, workflow, make_subjects
):
    tiny_loop_settings(settings, tmp_path)
    subjects = make_subjects(44, seed=7)
    volunteer = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="gem-browser")
    flagged = [subjects[5].pk, subjects[30].pk]
    for subject_id, note in zip(flagged, NOTES, strict=True):
        vote = record_vote(
            workflow=workflow,
            subject_id=subject_id,
            participant=volunteer,
            answer="real",
            idempotency_key=uuid.uuid4(),
            trusted=True,
        ).vote
        core_gems.record_flag(
            workflow_id=workflow.pk,
            subject_id=subject_id,
            participant=volunteer,
            vote_key=vote.idempotency_key,
            note=core_gems.clean_note(note),
        )
    job, _ = services.request_anomaly(workflow)  # autocommit: runs eagerly at once
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error

    base = live_server.url
    gems_url = reverse("gems:gems", args=[project.slug, workflow.slug])
    page.goto(f"{base}/accounts/login/?next={gems_url}?page=2")
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "owner-pass-123")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}{gems_url}?page=2")
    second_before = row_ids(page)
    seen = {2: page.inner_text("[data-testid=gem-list]")}
    page.goto(f"{base}{gems_url}?page=3")
    seen[3] = page.inner_text("[data-testid=gem-list]")

    page.goto(f"{base}{gems_url}")
    first = row_ids(page)
    seen[1] = page.inner_text("[data-testid=gem-list]")
    assert len(first) == len(second_before) == services.PAGE_SIZE
    # The flagged subjects are among the candidates, each with its flag and its note as text.
    text = "\n".join(seen.values())
    assert NOTES[0] in text and NOTES[1] in text and text.count("1 flag:") == 2
    assert page.locator("[data-testid=gem-list] b").count() == 0

    keys = ["i", "n", "5", "0", "4", "1"]
    for i in range(services.PAGE_SIZE):
        page.keyboard.press(keys[i % len(keys)])
        page.wait_for_function(
            f"() => [...document.querySelectorAll('[data-testid=gem-rated]')]"
            f".filter(s => s.textContent.trim()).length === {i + 1}"
        )
    assert GemRating.objects.filter(workflow=workflow).count() == services.PAGE_SIZE
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "gems-page-rated.png", full_page=True)

    page.click("[data-testid=gem-refresh]")
    page.wait_for_function(
        "() => ![...document.querySelectorAll('[data-testid=gem-rated]')].some(s => s.textContent.trim())"
    )
    after = row_ids(page)
    assert not set(after) & set(first)
    assert after != second_before  # the ratings reordered what is left
