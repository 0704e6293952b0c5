"""In a real Chromium: owner forms look like the volunteer pages' forms, the field guide's images are
readable, the favicon loads, and an export started with htmx shows up in the list without the
"No exports yet." that used to stay under it. Screenshots of the owner forms go to var/screenshots."""

import pytest
from django.urls import reverse

from tests.browser_support import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# The look of a page's first field, its label and its help text, as the browser computed them.
FORM_STYLE = """() => {
  if (document.activeElement) document.activeElement.blur();  // an autofocused field shows its focus ring
  const field = document.querySelector(
    'main form input:not([type=hidden]):not([type=checkbox]):not([type=radio]):not([type=file]), main form select');
  const label = document.querySelector('main form label[for]');
  const help = document.querySelector('main form .helptext, main form p:has(> label[for]) > span.muted');
  const css = (el, names) => el ? Object.fromEntries(names.map(n => [n, getComputedStyle(el)[n]])) : null;
  return {
    body: getComputedStyle(document.body).backgroundColor,
    field: css(field, ['backgroundColor', 'color', 'borderTopColor', 'borderTopLeftRadius', 'paddingTop', 'fontSize']),
    label: css(label, ['display', 'fontWeight']),
    help: css(help, ['color', 'fontSize', 'display']),
  };
}"""


def log_in(page, base, next_url):
    page.goto(f"{base}/accounts/login/?next={next_url}")
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "owner-pass-123")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}{next_url}")


def test_owner_forms_look_like_the_volunteer_forms(page, live_server, owner, workflow):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base, project = live_server.url, workflow.project.slug
    page.goto(f"{base}/accounts/login/")
    volunteer = page.evaluate(FORM_STYLE)
    # The fields are in the page's own colours, not the browser's white boxes; labels above fields.
    assert volunteer["field"]["backgroundColor"] == volunteer["body"]
    assert volunteer["label"] == {"display": "block", "fontWeight": "600"}

    log_in(page, base, reverse("core:project_create"))
    owner_forms = {
        "project-form": reverse("core:project_create"),
        "workflow-settings": reverse("core:workflow_settings", args=[project, workflow.slug]),
        "panel-batch-form": reverse("panels:batch_new", args=[project]),
        "team": reverse("core:team", args=[project]),
        "api-tokens": reverse("core:api_tokens"),
        "upload": reverse("core:upload", args=[project]),
    }
    helps = {}
    for name, url in owner_forms.items():
        page.goto(base + url)
        style = page.evaluate(FORM_STYLE)
        page.screenshot(path=SCREENSHOTS / f"owner-form-{name}.png", full_page=True)
        assert style["field"] == volunteer["field"], name
        assert style["label"] == volunteer["label"], name
        if style["help"]:
            helps[name] = style["help"]
    # Help under the fields reads the same everywhere it is written (Django's, the builder's, by hand).
    assert {"project-form", "workflow-settings", "panel-batch-form"} <= set(helps)
    assert len({tuple(sorted(h.items())) for h in helps.values()}) == 1, helps
    assert next(iter(helps.values()))["display"] == "block"


def test_field_guide_favicon_and_an_export_started_with_htmx(page, live_server, owner, workflow):
    base, project = live_server.url, workflow.project.slug
    page.goto(f"{base}{reverse('labeling:field_guide', args=[project])}")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.field-guide img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    sizes = page.evaluate(
        "() => [...document.querySelectorAll('.field-guide img')]"
        ".map(i => [i.getBoundingClientRect().width, i.getBoundingClientRect().height, i.naturalWidth])"
    )
    assert len(sizes) == 27
    # Readable and sharp: 189 px for a 252 px rendering of a 63 px stamp, 3 screen pixels per stamp pixel.
    assert all(width == height == 189 and natural == 252 for width, height, natural in sizes), sizes[:3]
    page.screenshot(path=SCREENSHOTS / "field-guide.png")

    icon = page.evaluate(
        "() => fetch('/favicon.ico').then(r => [r.status, r.redirected, r.headers.get('content-type')])"
    )
    assert icon[0] == 200 and icon[1] is True and icon[2].startswith("image/svg+xml")
    linked = page.evaluate(
        "() => fetch(document.querySelector('link[rel=icon]').href).then(r => [r.status, r.headers.get('content-type')])"
    )
    assert linked[0] == 200 and linked[1].startswith("image/svg+xml")

    exports = reverse("core:exports", args=[project])
    log_in(page, base, exports)
    assert page.locator("#no-exports").count() == 1
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.click("text=Start export")
    page.wait_for_selector(".export-job")
    assert page.locator("#no-exports").count() == 0 and "No exports yet." not in page.inner_text("#exports")
    assert page.locator(".export-job").count() == 1

    # A refused request (a choice the form never offered) shows its error in place.
    page.evaluate("() => { document.querySelector('#id_export option').value = 'nope:csv'; }")
    page.select_option("#id_export", index=0)
    page.click("text=Start export")
    page.wait_for_selector("[data-testid=export-error]")
    assert "Unknown export" in page.inner_text("[data-testid=export-error]")
    assert page.locator(".export-job").count() == 1 and page.locator("#no-exports").count() == 0
    assert navigations == []  # both answers were swapped in by htmx
