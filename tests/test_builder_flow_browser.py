"""The whole project-builder flow in a real Chromium, as a new scientist tries it.

A scientist signs up, creates a private project, builds a real/bogus workflow with three answers
(real, bogus, not sure) and its tutorial, uploads real ZTF and Rubin alerts into a subject set,
invites an expert (who signs up from the e-mailed link, accepts and labels gold), previews, goes
live; a third account cannot see the private project; the project goes public, an anonymous
volunteer classifies ten subjects with the keyboard, the owner pauses the project (the volunteer
sees the paused page and a vote is refused) and exports the labels.

Everything is done through the pages, as a person would: the fixtures start only the live server
and the browser; the database is read only to check what the pages say. Uploads are ingested by
the ingest job, which runs at once in tests (Celery is eager: tests/conftest.py).
"""

import csv
import io
import re
import uuid
from pathlib import Path

import pytest

from core.models import Subject
from labeling.models import Vote
from tests.browser_support import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Small files of both surveys (one alert each): enough subjects for ten classifications and a few gold
# labels. ZTF alerts carry earlier photometry, so each draws a light curve when first shown: four are enough.
ZTF_FILES = [
    "1661382530015060001.avro",
    "396522680015020000.avro",
    "472263571115115000.avro",
    "472263571115115008.avro",
]
RUBIN_FILES = [
    f"{candid}_{candid}.avro"
    for candid in (
        "169298432618921989", "169298432621019290", "169298432621019382", "169298432622068181",
        "169298432755761170", "169298432757858307", "169298432759955486", "169298432876871712",
    )
]  # fmt: skip
N_SUBJECTS = len(ZTF_FILES) + len(RUBIN_FILES)
PASSWORD = "Nebula-walk-7319"
SLUG = "m31-transients"
WORKFLOW = "real-or-bogus"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Three accounts sign up: the production hasher's million rounds would be most of the test's time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"builder-flow-{name}.png", full_page=True)


def sign_up(page, base: str, username: str) -> None:
    page.goto(f"{base}/")
    page.click("header >> text=Sign up")
    fill_sign_up(page, username)
    page.wait_for_selector(f"header .who:text-is('{username}')")


def fill_sign_up(page, username: str) -> None:
    page.fill("#id_username", username)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button:text('Create account')")


def counter_is(page, n: int) -> None:
    page.wait_for_function(f"() => document.getElementById('counter').textContent.trim() === '{n}'")


def test_a_new_scientist_builds_runs_pauses_and_exports_a_project(
    browser, page, live_server, ztf_dir, rubin_dir, mailoutbox
):
    base = live_server.url
    owner = page

    # --- Sign up and create a private project ------------------------------------------------------
    sign_up(owner, base, "alice")
    owner.click("header >> text=Dashboard")
    owner.click("text=Create a project")
    owner.fill("#id_name", "M31 transients")
    owner.fill("#id_slug", SLUG)
    owner.fill("#id_description", "Real or bogus? New transients in Andromeda.")
    owner.fill("#id_long_description", "We look for **novae** in M31.")
    owner.uncheck("#id_is_public")
    assert owner.input_value("#id_status") == "draft"
    shot(owner, "project-form")
    owner.click("button:text('Create the project')")
    owner.wait_for_url(f"{base}/p/{SLUG}/")
    assert "is created as a draft" in owner.inner_text(".messages")

    # --- A real/bogus workflow with three answers, and its tutorial ----------------------------------
    owner.click("[data-testid=builder-workflows]")
    owner.click("text=New workflow")
    owner.fill("#id_name", "Nova hunt")
    owner.fill("#id_slug", WORKFLOW)
    assert owner.input_value("#id_kind") == "real_bogus"
    owner.fill("#id_question", "Is the new source in the difference image real?")
    # Real and bogus are there already; the third row becomes "not sure", counting as neither side.
    assert [owner.input_value(f"[name=answers-{i}-key]") for i in (0, 1)] == ["real", "bogus"]
    owner.fill("[name=answers-2-key]", "not_sure")
    owner.fill("[name=answers-2-label]", "Not sure")
    owner.fill("[name=answers-2-shortcut]", "N")
    owner.select_option("[name=answers-2-counts_as]", "")
    shot(owner, "workflow-editor")
    owner.click("button:text('Create the workflow')")
    owner.wait_for_url(f"{base}/p/{SLUG}/workflows/{WORKFLOW}/")
    answers = owner.inner_text("section.card:has(h2:text('Answers'))")
    assert "Not sure" in answers and "counts as neither" in answers
    assert owner.get_attribute("button[value=launch]", "disabled") is not None  # no subjects yet

    owner.get_by_role("link", name="Tutorial", exact=True).click()
    owner.fill("[name=tutorial-0-title]", "Welcome to M31")
    owner.fill("[name=tutorial-0-text]", "Press **N** when you are *not sure*.")
    owner.click("button:text('Save')")
    owner.wait_for_selector(".messages >> text=Saved.")
    assert "Welcome to M31" in owner.inner_text("ol.tutorial-steps")

    # --- A subject set, and real alerts of both surveys uploaded into it -----------------------------
    owner.click("text=← Nova hunt")
    owner.click("text=Manage subject sets")
    owner.fill("#id_name", "Night one")
    owner.check("input[name=workflows]")
    owner.click("button:text('Create')")
    owner.wait_for_selector("[data-testid=subject-sets] >> text=Night one")
    owner.click("text=upload page")
    # The project's one workflow is chosen already.
    assert "Nova hunt" in owner.locator("#id_workflow option:checked").inner_text()
    owner.fill("#id_subject_set", "Night one")
    owner.set_input_files(
        "#id_files",
        [ztf_dir / "avro" / name for name in ZTF_FILES] + [rubin_dir / "avro" / name for name in RUBIN_FILES],
    )
    owner.click("button:text('Upload and ingest')")
    # The ingest job runs on the worker (eagerly here); the progress page polls it until it has finished.
    owner.wait_for_selector(".ingest-job[data-status=succeeded]")
    summary = owner.inner_text("[data-testid=ingest-summary]")
    assert f"ingested {N_SUBJECTS}" in summary, summary
    assert owner.locator("[data-testid=ingest-errors]").count() == 0
    shot(owner, "upload-progress")
    subjects = Subject.objects.filter(project__slug=SLUG, subject_set__name="Night one")
    assert {s.survey for s in subjects} == {"ztf", "rubin"} and subjects.count() == N_SUBJECTS

    # --- The owner invites an expert by e-mail; the expert signs up from the link and accepts -------
    owner.goto(f"{base}/p/{SLUG}/")
    owner.click("text=Team: members, roles and invitations")
    owner.fill("#id_who", "bob@example.org")
    owner.select_option("#id_role", "expert")
    owner.click("button:text('Add or invite')")
    assert "An invitation is on its way to bob@example.org" in owner.inner_text(".messages")
    shot(owner, "team")
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["bob@example.org"]
    link = re.search(r"https?://\S+/invitations/\S+/", mailoutbox[0].body).group(0)

    expert = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    expert.set_default_timeout(15000)
    expert.goto(link)
    assert "You are invited to join as expert" in expert.inner_text("main")
    expert.click("main >> text=Sign up")
    fill_sign_up(expert, "bob")
    expert.click("button:text('Accept as bob')")
    assert "you are expert of it" in expert.inner_text(".messages")
    owner.reload()
    assert owner.locator("table tr", has_text="bob").locator("select[name=role]").input_value() == "expert"
    assert owner.locator("text=Open invitations").count() == 0

    # The expert finds the gold page from the project and labels three subjects with the keyboard.
    expert.get_by_role("link", name="M31 transients").click()
    expert.click("[data-testid=expert-tools] >> text=label gold")
    # The keys are read by the page's deferred script: a key pressed while it is still loading (a busy
    # machine) would be lost, so wait for the whole page first.
    expert.wait_for_load_state("load")
    for i, key in enumerate("rbr", start=1):
        expert.wait_for_selector("#vote-form")
        expert.keyboard.press(key)
        expert.wait_for_function(
            f"() => document.querySelector('[data-testid=n-gold]').textContent.trim() === '{i}'"
        )
    assert "Saved:" in expert.inner_text("[data-testid=last-gold]")
    shot(expert, "gold")
    assert subjects.exclude(gold_label="").count() == 3

    # --- Preview: classify one subject; nothing is stored --------------------------------------------
    owner.goto(f"{base}/p/{SLUG}/workflows/{WORKFLOW}/")
    owner.click("text=Preview as a volunteer")
    assert "Welcome to M31" in owner.inner_text("#tutorial")
    owner.click("#tutorial-close")
    owner.keyboard.press("n")
    outcome = owner.wait_for_selector("[data-testid=preview-outcome]").inner_text()
    assert "You answered Not sure: it would count as neither" in outcome and "Not stored" in outcome
    owner.click("text=Back to the workflow")
    owner.click("text=← Workflows")
    owner.click("text=← Dashboard")
    assert owner.inner_text("[data-testid=n-votes]") == "0"
    assert Vote.objects.count() == 0

    # --- Go live: the workflow, then the project (still private) -------------------------------------
    owner.click("[data-testid=builder-workflows]")
    owner.click("[data-testid=workflows] >> text=Nova hunt")
    assert owner.locator("[data-check] .check-mark:text('✗')").count() == 0
    owner.click("button:text('Go live')")
    assert "The workflow is live" in owner.inner_text(".messages")
    set_state(owner, base, "live")

    # --- A third account sees nothing of the private project -----------------------------------------
    stranger_context = browser.new_context()
    stranger = stranger_context.new_page()
    stranger.set_default_timeout(15000)
    sign_up(stranger, base, "carol")
    assert "M31 transients" not in stranger.inner_text("main")
    for path in (f"/p/{SLUG}/", f"/p/{SLUG}/about/", f"/p/{SLUG}/{WORKFLOW}/"):
        response = stranger.goto(f"{base}{path}")
        assert response.status == 404, path
        assert "Not Found" in stranger.content() and "M31" not in stranger.content(), path
    stranger_context.close()

    # --- Public: an anonymous volunteer classifies ten subjects with the keyboard ---------------------
    owner.goto(f"{base}/p/{SLUG}/settings/")
    owner.check("#id_is_public")
    owner.click("button:text('Save')")
    assert owner.inner_text(".messages") == "Saved."

    volunteer_context = browser.new_context(viewport={"width": 1200, "height": 900})
    volunteer = volunteer_context.new_page()
    volunteer.set_default_timeout(15000)
    volunteer.goto(f"{base}/")
    volunteer.locator(".project-card", has_text="M31 transients").locator("a.button.primary").first.click()
    volunteer.wait_for_url(f"{base}/p/{SLUG}/{WORKFLOW}/")
    assert "Welcome to M31" in volunteer.inner_text("#tutorial")
    volunteer.keyboard.press("Enter")  # closes the first-visit tutorial
    volunteer.wait_for_selector("#tutorial:not([open])", state="attached")
    keys = "rbn" * 3 + "r"
    answered, gold_feedback = {}, 0
    for i, key in enumerate(keys, start=1):
        # The next subject is on the page once its form shows a subject not answered yet.
        volunteer.wait_for_function(
            "seen => { const t = document.querySelector('#vote-form .triplet');"
            " return t !== null && !seen.includes(t.dataset.subject); }",
            arg=list(answered),
        )
        if i == 5:
            shot(volunteer, "classify")
        answered[volunteer.get_attribute("#vote-form .triplet", "data-subject")] = key
        volunteer.keyboard.press(key)
        counter_is(volunteer, i)
        if volunteer.locator("[data-testid=feedback]").count():
            # An expert's gold subject: the feedback stays until a key moves on (the key answers nothing).
            gold_feedback += 1
            volunteer.keyboard.press("Escape")
            volunteer.wait_for_selector(".feedback-overlay", state="detached")
    assert volunteer.inner_text("#counter").strip() == "10" and len(answered) == 10
    # Three of the twelve subjects are gold and ten were answered: at least one was gold.
    assert gold_feedback >= 1

    # --- The owner pauses the project: the volunteer sees the paused page; a vote is refused -------
    set_state(owner, base, "paused")
    volunteer.reload()
    notice = volunteer.inner_text("[role=status]")
    # Polite, and true for a page where nothing was answered.
    assert "“M31 transients” is paused for now and takes no new classifications" in notice, notice
    assert "Thank you for your help: every classification you made is kept" in notice
    assert "not recorded" not in notice
    assert volunteer.locator("#vote-form").count() == 0
    shot(volunteer, "paused")
    csrf = next(c["value"] for c in volunteer_context.cookies() if c["name"] == "csrftoken")
    subject = next(pk for pk in subjects.values_list("pk", flat=True) if str(pk) not in answered)
    refused = volunteer.request.post(
        f"{base}/p/{SLUG}/{WORKFLOW}/vote/",
        form={"subject": str(subject), "answer": "real", "key": str(uuid.uuid4()), "ticket": ""},
        headers={"X-CSRFToken": csrf, "Referer": f"{base}/p/{SLUG}/{WORKFLOW}/"},
    )
    assert refused.status == 409, refused.text()
    assert "is paused for now and takes no new classifications" in refused.text()
    volunteer_context.close()
    assert Vote.objects.count() == 10

    # --- Export the labels and download them ----------------------------------------------------------
    owner.goto(f"{base}/p/{SLUG}/")
    owner.click("text=Exports")
    owner.select_option("#id_export", "labels:csv")
    owner.click("button:text('Start export')")
    owner.wait_for_selector(".export-job[data-status=succeeded]")
    shot(owner, "exports")
    with owner.expect_download() as download:
        owner.click("[data-testid=export-download]")
    rows = {
        row["subject_id"]: row for row in csv.DictReader(io.StringIO(Path(download.value.path()).read_text()))
    }
    assert len(rows) == N_SUBJECTS
    for subject_id, key in answered.items():
        row = rows[subject_id]
        assert row["n_votes"] == "1", row
        assert (row["n_real"], row["n_bogus"]) == {"r": ("1", "0"), "b": ("0", "1"), "n": ("0", "0")}[key], (
            row
        )
    assert sum(row["gold_label"] != "" for row in rows.values()) == 3
    assert all(row["n_votes"] == "0" for sid, row in rows.items() if sid not in answered)


def set_state(owner, base: str, state: str) -> None:
    """The project's lifecycle, moved on its settings page."""
    owner.goto(f"{base}/p/{SLUG}/")
    owner.click("text=Project settings and state")
    owner.select_option("#id_status", state)
    owner.click("button:text('Save')")
    assert owner.inner_text(".messages") == "Saved."
    assert owner.input_value("#id_status") == state
