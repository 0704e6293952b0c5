"""Accessibility: every main page passes axe-core with no serious or critical violation.

axe-core is vendored under tests/vendor/axe-core (test-only; see its README). The context bypasses the
site's CSP only so that the test can inject axe; the pages themselves are served as usual."""

from pathlib import Path

import pytest

from core.models import ModelVersion, Subject
from panels import services as tasklinks
from tests.similarity_support import similarity_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


def _violations(page) -> list[str]:
    """axe's serious and critical violations on the current page, one readable line each."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    lines = []
    for violation in results["violations"]:
        if violation["impact"] in BLOCKING:
            targets = [" ".join(node["target"]) for node in violation["nodes"][:5]]
            lines.append(f"{violation['impact']} {violation['id']}: {violation['help']} at {targets}")
    return lines


def _login(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit].primary")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def test_main_pages_have_no_serious_or_critical_violations(
    browser, live_server, owner, project, workflow, make_subjects
):
    subjects = make_subjects(6)
    for subject in subjects[:2]:
        Subject.objects.filter(pk=subject.pk).update(
            gold_label=subject.truth_label, gold_subtype=subject.truth_subtype
        )
    ModelVersion.objects.create(
        workflow=workflow, version=1, status=ModelVersion.ACTIVE, n_train=40,
        metrics={"heldout": {"n": 20, "auc": 0.91, "accuracy": 0.85}},
    )  # fmt: skip
    similar = similarity_workflow(project, n_subjects=20)
    batch = tasklinks.create_batch(
        workflow=workflow, name="Pilot", tasks_per_assignment=3, n_assignments=2, gold_share=0.0,
        expires_at=None, instructions="Real means a round blob in the difference image.",
    )  # fmt: skip
    base = live_server.url
    study_link = f"{base}/t/{tasklinks.batch_token(batch)}/?worker_id=A11Y-1"

    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        page.wait_for_load_state("load")
        found[name] = _violations(page)
        # axe accepts any alt; ours must say what the image shows (not empty, not a file name), unless
        # the image sits in a control whose aria-label already says it (a similarity tile).
        alts = page.eval_on_selector_all(
            "img",
            "imgs => imgs.filter(i => !i.closest('[aria-label]')).map(i => i.getAttribute('alt') || '')",
        )
        found[name] += [f"image alt {a!r} says nothing" for a in alts if len(a) < 8 or a.endswith(".png")]

    # A volunteer, not signed in.
    page.goto(f"{base}/")
    check("home")
    page.goto(f"{base}/p/{project.slug}/{workflow.slug}/")
    check("classify real/bogus, tutorial open")
    page.keyboard.press("Enter")
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    check("classify real/bogus")
    page.goto(f"{base}/similarity/p/{project.slug}/{similar.slug}/")
    check("classify similarity")
    page.goto(f"{base}/p/{project.slug}/field-guide/")
    check("field guide")
    page.goto(f"{base}/me/")
    check("my classifications")
    page.goto(study_link)
    check("panel landing")
    page.check("[data-testid=consent]")
    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=progress-text]")
    check("panel task")

    # The owner's pages.
    _login(page, base, "owner", "owner-pass-123")
    for name, path in [
        ("dashboard", f"/p/{project.slug}/"),
        ("model", f"/p/{project.slug}/{workflow.slug}/model/"),
        ("exports", f"/p/{project.slug}/exports/"),
        ("panel batches", f"/p/{project.slug}/batches/"),
        ("panel batch", f"/p/{project.slug}/batches/{batch.pk}/"),
        ("gems", f"/p/{project.slug}/{workflow.slug}/gems/"),
    ]:
        response = page.goto(base + path)
        assert response.status == 200, f"{name}: {path} answered {response.status}"
        check(name)
    context.close()

    failing = {name: lines for name, lines in found.items() if lines}
    assert not failing, "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in failing.items())
    assert len(found) == 14
