"""A paid annotator in a real Chromium: the owner creates a batch, a private window opens the generic link,
finishes a 5-task assignment and reads the code, and the owner's payment CSV lists it as complete."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Participant, Subject
from labeling.models import Vote
from panels import services as tasklinks
from panels.models import Assignment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_worker_completes_a_five_task_assignment_and_the_payment_csv_lists_it(
    page, browser, live_server, owner, workflow, make_subjects
):
    subjects = make_subjects(9)
    for subject in subjects[:3]:  # expert labels, for the gold checks
        Subject.objects.filter(pk=subject.pk).update(
            gold_label=subject.truth_label, gold_subtype=subject.truth_subtype
        )

    # The owner logs in and creates the batch.
    page.goto(f"{live_server.url}/accounts/login/?next=/p/{workflow.project.slug}/")
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "owner-pass-123")
    page.click("button[type=submit].primary")
    page.click("text=Paid panels: task links and payments")
    page.click("text=New batch")
    page.fill("input[name=name]", "Browser pilot")
    page.fill("input[name=tasks_per_assignment]", "5")
    page.fill("input[name=n_assignments]", "2")
    page.fill("input[name=gold_percent]", "20")
    page.fill("input[name=expires_at]", (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("textarea[name=instructions]", "Real means a round blob in the difference image.")
    page.fill("input[name=return_url_template]", "https://panel.example.org/complete?cc={code}")
    page.click("text=Create batch")
    generic = page.input_value("[data-testid=generic-link]")
    assert generic.startswith(live_server.url) and generic.endswith("?worker_id=WORKER_ID")
    assert "{{%PROLIFIC_PID%}}" in page.input_value("[data-testid=prolific-link]")
    csv_url = page.get_attribute("[data-testid=payment-csv]", "href")

    # The annotator, in a private window: no account, no cookies.
    private = browser.new_context(viewport={"width": 1200, "height": 900})
    worker = private.new_page()
    worker.set_default_timeout(15000)
    worker.goto(generic.replace("WORKER_ID", "PW-browser-1"))
    assert "Real means a round blob" in worker.inner_text("[data-testid=landing]")
    worker.check("[data-testid=consent]")
    worker.click("[data-testid=start]")
    navigations = []
    worker.on("framenavigated", lambda frame: navigations.append(frame.url))
    shown = []
    for i in range(5):
        worker.wait_for_function(
            f"() => document.querySelector('[data-testid=progress-text]').textContent.includes('{i} of 5')"
        )
        shown.append(worker.get_attribute(".triplet", "data-subject"))
        worker.wait_for_timeout(400)  # a human pace, under the per-worker rate limit
        worker.click("#vote-form button.answer.real")
    worker.wait_for_selector("[data-testid=completion-code]")
    code = worker.inner_text("[data-testid=completion-code]").strip()
    assert (
        worker.get_attribute("[data-testid=return]", "href")
        == f"https://panel.example.org/complete?cc={code}"
    )
    assert len(navigations) == 1  # tasks swapped in by htmx; one navigation to the completion page
    private.close()

    assignment = Assignment.objects.get(worker_id="PW-browser-1")
    assert len(set(shown)) == 5 and {int(s) for s in shown} == set(assignment.subject_ids)
    assert code == tasklinks.completion_code(assignment)
    votes = Vote.objects.filter(assignment=assignment)
    assert votes.count() == 5 and {v.participant.kind for v in votes} == {Participant.WORKER}
    assert all(v.viewport for v in votes)

    # The owner's payment CSV lists the assignment as complete, with the code the worker saw.
    response = page.request.get(f"{live_server.url}{csv_url}")
    assert response.ok
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert [(r["worker_id"], r["status"], r["tasks_done"], r["completion_code"]) for r in rows] == [
        ("PW-browser-1", "complete", "5", code)
    ]
