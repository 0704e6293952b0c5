"""The light curve beside the cutouts on the classify page (core.lightcurves), through the test client."""

import html as html_lib
import re

import pytest
from django.urls import reverse

from core import lightcurves
from core.models import Subject
from core.storage import private_storage
from mlcore.synth import generate_triplets
from mlcore.synth_rubin import ztf_light_curves

pytestmark = pytest.mark.django_db


def classify(client, workflow) -> str:
    response = client.get(reverse("labeling:classify", args=[workflow.project.slug, workflow.slug]))
    assert response.status_code == 200
    return response.content.decode()


def figure(html: str) -> re.Match | None:
    return re.search(
        r'<figure class="light-curve" data-testid="light-curve">\s*<img src="([^"]+)"[^>]*alt="([^"]+)"', html
    )


@pytest.fixture
def with_history(make_subjects):
    (subject,) = make_subjects(1)
    batch = generate_triplets(1, seed=0)
    subject.light_curve = ztf_light_curves(batch.metadata, batch.subtypes, seed=4)[0]
    subject.save(update_fields=["light_curve"])
    return subject


def test_the_plot_is_shown_with_a_meaningful_alt_text_and_drawn_only_once(
    client, workflow, with_history, monkeypatch
):
    drawn = []
    real_render = lightcurves.render_png
    monkeypatch.setattr(lightcurves, "render_png", lambda points: drawn.append(1) or real_render(points))
    html = classify(client, workflow)
    found = figure(html)
    assert found, "the light curve should be beside the cutouts"
    assert 'class="triplet with-light-curve"' in html
    alt = html_lib.unescape(found.group(2))
    n_limits = sum(p["kind"] == "limit" for p in with_history.light_curve)
    assert alt.startswith("Light curve: ") and "before this detection" in alt and "This detection: " in alt
    if n_limits:
        assert f"{n_limits} upper limit" in alt
    url = html_lib.unescape(found.group(1))
    image = client.get(url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    stored = Subject.objects.get(pk=with_history.pk).images
    assert stored[lightcurves.ROLE].endswith(".png") and {"science", "reference", "difference"} <= set(stored)

    classify(client, workflow)  # the same subject again: the stored plot is reused
    assert drawn == [1]


def test_no_plot_without_history_or_when_the_workflow_turns_it_off(client, workflow, with_history):
    workflow.show_light_curve = False
    workflow.save(update_fields=["show_light_curve"])
    html = classify(client, workflow)
    assert 'name="subject"' in html and figure(html) is None and "with-light-curve" not in html

    workflow.show_light_curve = True
    workflow.save(update_fields=["show_light_curve"])
    only_now = [p for p in with_history.light_curve if p.get("current")]
    for curve in ([], only_now, [{"mjd": "soon"}, "junk"]):
        Subject.objects.filter(pk=with_history.pk).update(light_curve=curve)
        html = classify(client, workflow)
        assert 'name="subject"' in html and figure(html) is None
    assert lightcurves.ROLE not in Subject.objects.get(pk=with_history.pk).images


def test_a_private_projects_plot_stays_private(client, project, workflow, with_history, owner):
    project.is_public = False
    project.save(update_fields=["is_public"])
    client.force_login(owner)
    found = figure(classify(client, workflow))
    name = Subject.objects.get(pk=with_history.pk).images[lightcurves.ROLE]
    assert private_storage().exists(name)
    url = html_lib.unescape(found.group(1))
    client.logout()
    assert client.get(url).status_code == 200  # the page's signed URL
    assert client.get(url.split("?")[0]).status_code == 404  # nobody else


def test_the_plot_follows_the_next_subject_swapped_in_by_htmx(client, workflow, make_subjects):
    subjects = make_subjects(2, seed=1)
    curves = ztf_light_curves(*[(b.metadata, b.subtypes) for b in [generate_triplets(2, seed=1)]][0], seed=1)
    for subject, curve in zip(subjects, curves, strict=True):
        Subject.objects.filter(pk=subject.pk).update(light_curve=curve)
    html = classify(client, workflow)
    form = {n: re.search(rf'name="{n}" value="([^"]*)"', html).group(1) for n in ("subject", "ticket", "key")}
    response = client.post(
        reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug]),
        {**form, "answer": "real", "started_at": "", "viewport": ""},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    swapped = response.content.decode()
    assert 'id="task"' in swapped and figure(swapped) is not None
    assert f'name="subject" value="{form["subject"]}"' not in swapped


def test_describe_counts_bands_and_the_brightest_earlier_detection():
    points = [
        {"mjd": 100.0, "band": "g", "kind": "limit", "mag": 20.5, "flux_njy": None, "flux_err_njy": 100.0},
        {"mjd": 104.0, "band": "r", "kind": "detection", "mag": 19.2, "mag_err": 0.1},
        {"mjd": 106.0, "band": "g", "kind": "detection", "mag": 18.7, "mag_err": 0.1},
        {"mjd": 110.0, "band": "r", "kind": "detection", "mag": 18.9, "mag_err": 0.05, "current": True},
    ]
    text = lightcurves.describe(points)
    assert text == (
        "Light curve: 2 earlier detections, 1 upper limit (not detected) over the 10 days before this "
        "detection, in g/r. This detection: r 18.9 mag. Brightest earlier detection: g 18.7 mag, 4 days before."
    )
    assert "Nothing was detected here before." in lightcurves.describe([points[0], points[-1]])
