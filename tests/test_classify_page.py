"""The volunteer page through the Django test client."""

import re
import uuid

import pytest
from django.urls import reverse

from core.models import Subject
from labeling.models import Vote

pytestmark = pytest.mark.django_db


def classify_url(workflow):
    return reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])


def vote_url(workflow):
    return reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])


def shown_subject(html: str) -> int:
    return int(re.search(r'name="subject" value="(\d+)"', html).group(1))


def served_form(html: str) -> dict:
    """What the page's form sends with an answer: the subject, its ticket and the vote's key."""
    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
        for name in ("subject", "ticket", "key")
    }


def test_page_shows_triplet_buttons_and_tutorial(client, workflow, make_subjects):
    make_subjects(3)
    html = client.get(classify_url(workflow)).content.decode()
    assert html.count("<img") >= 3 and 'alt="Science image' in html and 'alt="Difference image' in html
    for label in ("Real", "Bogus", "Skip"):
        assert re.search(rf"<button[^>]*>{label} <kbd>", html)
    assert '<dialog id="tutorial" data-first-visit="1"' in html
    assert 'Your classifications: <strong id="counter" data-testid="counter">0</strong>' in html


def test_ground_truth_is_never_sent(client, workflow, make_subjects):
    make_subjects(4)
    html = client.get(classify_url(workflow)).content.decode()
    subject = Subject.objects.get(pk=shown_subject(html))
    assert subject.truth_subtype and subject.truth_subtype not in html
    assert "truth" not in html.lower()


def test_htmx_vote_swaps_in_next_subject_and_counts(client, workflow, make_subjects):
    make_subjects(3)
    html = client.get(classify_url(workflow)).content.decode()
    seen = []
    for n in range(1, 4):
        sid = shown_subject(html)
        assert sid not in seen
        seen.append(sid)
        resp = client.post(
            vote_url(workflow), {**served_form(html), "answer": "real"}, HTTP_HX_REQUEST="true"
        )
        html = resp.content.decode()
        assert html.lstrip().startswith('<section id="task"')  # the partial, not a whole page
        assert f'data-testid="counter">{n}<' in html
    assert "You have finished this workflow" in html
    assert Vote.objects.count() == 3


def test_double_press_stores_one_vote(client, workflow, make_subjects):
    make_subjects(1)
    form = served_form(client.get(classify_url(workflow)).content.decode())
    for _ in range(2):
        resp = client.post(vote_url(workflow), {**form, "answer": "bogus"}, HTTP_HX_REQUEST="true")
        assert resp.status_code == 200
    assert Vote.objects.count() == 1


def test_retired_subjects_are_not_served(client, workflow, make_subjects):
    a, b = make_subjects(2)
    Subject.objects.filter(pk=a.pk).update(status=Subject.RETIRED)
    for _ in range(5):
        assert shown_subject(client.get(classify_url(workflow)).content.decode()) == b.pk


def test_bad_vote_shows_an_error_and_stores_nothing(client, workflow, make_subjects):
    make_subjects(1)
    form = served_form(client.get(classify_url(workflow)).content.decode())
    resp = client.post(vote_url(workflow), {**form, "key": "x", "answer": "real"}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 400 and 'role="alert"' in resp.content.decode()
    assert Vote.objects.count() == 0


def test_non_htmx_vote_redirects_back(client, workflow, make_subjects):
    make_subjects(1)
    form = served_form(client.get(classify_url(workflow)).content.decode())
    resp = client.post(vote_url(workflow), {**form, "key": str(uuid.uuid4()), "answer": "real"})
    assert resp.status_code == 302 and resp.url == classify_url(workflow)
    assert Vote.objects.count() == 1


def test_tutorial_is_shown_only_on_first_visit(client, workflow, make_subjects):
    make_subjects(1)
    client.post(reverse("labeling:tutorial_seen", args=[workflow.project.slug, workflow.slug]))
    assert '<dialog id="tutorial" data-first-visit="0"' in client.get(classify_url(workflow)).content.decode()


def test_unknown_workflow_is_404(client, workflow):
    assert client.get(reverse("labeling:classify", args=[workflow.project.slug, "nope"])).status_code == 404


def test_field_guide_shows_every_type(client, workflow):
    from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES

    html = client.get(reverse("labeling:field_guide", args=[workflow.project.slug])).content.decode()
    for subtype in REAL_SUBTYPES + BOGUS_SUBTYPES:
        assert f'id="{subtype}"' in html
    assert html.count("<img") >= 3 * (len(REAL_SUBTYPES) + len(BOGUS_SUBTYPES))
