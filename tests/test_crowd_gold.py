"""Gold standard: the expert's keyboard page, feedback after gold subjects only, demo seeding."""

import re
import uuid

import pytest
from django.urls import reverse

from core.models import ProjectMembership, Subject
from labeling.gold import GoldError, parse_label, seed_gold_from_truth, set_gold
from mlcore.synth import SUBTYPE_DESCRIPTIONS

pytestmark = pytest.mark.django_db


def new_subject(workflow, name, **kwargs):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **kwargs)


def gold_url(workflow, name="crowd_gold"):
    return reverse(f"labeling:{name}", args=[workflow.project.slug, workflow.slug])


def shown_subject(html: str) -> int:
    return int(re.search(r'name="subject" value="(\d+)"', html).group(1))


@pytest.fixture
def member(django_user_model, project):
    def make(role, name=None):
        user = django_user_model.objects.create_user(name or role, password="pw-123456789")
        if role:
            ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


def test_expert_page_has_keyboard_buttons_and_stores_gold(client, owner, workflow):
    a, b = new_subject(workflow, "a"), new_subject(workflow, "b")
    client.force_login(owner)
    html = client.get(gold_url(workflow)).content.decode()
    for label, key in (("Real", "R"), ("Bogus", "B"), ("Skip", "S")):
        assert re.search(rf'data-keys="{key}"[^>]*>{label} <kbd>{key}</kbd>', html)
    assert 'value="bogus:cosmic_ray"' in html and "skyvote/classify.js" in html
    first = shown_subject(html)

    resp = client.post(
        gold_url(workflow, "crowd_gold_label"), {"subject": first, "label": "real"}, HTTP_HX_REQUEST="true"
    )
    html = resp.content.decode()
    assert html.lstrip().startswith('<section id="task"')
    labelled = Subject.objects.get(pk=first)
    assert (labelled.gold_label, labelled.gold_subtype, labelled.gold_by) == ("real", "", owner)
    second = shown_subject(html)
    assert second != first and {first, second} == {a.pk, b.pk}

    client.post(
        gold_url(workflow, "crowd_gold_label"), {"subject": second, "label": "bogus:satellite_streak"}
    )
    labelled = Subject.objects.get(pk=second)
    assert (labelled.gold_label, labelled.gold_subtype) == ("bogus", "satellite_streak")
    assert "Nothing left to label" in client.get(gold_url(workflow)).content.decode()


def test_skip_shows_the_next_subject_and_stores_nothing(client, owner, workflow):
    new_subject(workflow, "a")
    new_subject(workflow, "b")
    client.force_login(owner)
    first = shown_subject(client.get(gold_url(workflow)).content.decode())
    html = client.post(
        gold_url(workflow, "crowd_gold_label"), {"subject": first, "label": "skip"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert shown_subject(html) != first
    assert not Subject.objects.exclude(gold_label="").exists()


def test_bad_label_is_explained_and_changes_nothing(client, owner, workflow):
    s = new_subject(workflow, "a")
    client.force_login(owner)
    html = client.post(
        gold_url(workflow, "crowd_gold_label"),
        {"subject": s.pk, "label": "real:cosmic_ray"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "is not a real type" in html
    s.refresh_from_db()
    assert s.gold_label == ""
    with pytest.raises(GoldError, match="'real' or 'bogus'"):
        parse_label("maybe")


def test_review_queue_comes_first_and_a_gold_label_settles_it(client, owner, workflow):
    new_subject(workflow, "plain", vote_count=1)
    waiting = new_subject(workflow, "waiting", status=Subject.RETIRED, needs_review=True, vote_count=20)
    client.force_login(owner)
    assert shown_subject(client.get(gold_url(workflow)).content.decode()) == waiting.pk
    set_gold(waiting, "bogus", owner)
    waiting.refresh_from_db()
    assert not waiting.needs_review and waiting.is_retired and waiting.retired_reason == "expert: bogus"


def test_experts_and_scientists_may_label_viewers_may_not_strangers_see_nothing(client, workflow, member):
    s = new_subject(workflow, "a")
    client.force_login(member("expert"))
    assert client.get(gold_url(workflow)).status_code == 200
    client.post(gold_url(workflow, "crowd_gold_label"), {"subject": s.pk, "label": "real"})
    assert Subject.objects.get(pk=s.pk).gold_label == "real"

    client.force_login(member("scientist"))
    assert client.get(gold_url(workflow)).status_code == 200
    client.force_login(member("viewer"))
    assert client.get(gold_url(workflow)).status_code == 403
    assert (
        client.post(gold_url(workflow, "crowd_gold_label"), {"subject": s.pk, "label": "bogus"}).status_code
        == 403
    )
    client.force_login(member(None, "stranger"))
    assert client.get(gold_url(workflow)).status_code == 404
    assert (
        client.post(gold_url(workflow, "crowd_gold_label"), {"subject": s.pk, "label": "bogus"}).status_code
        == 404
    )
    assert Subject.objects.get(pk=s.pk).gold_label == "real"
    client.logout()
    assert client.get(gold_url(workflow)).status_code == 302  # to the login page


def vote_on(client, workflow, subject, answer):
    """Answer `subject` as the client's volunteer who was served it (a ticket as the page would give)."""
    from core.models import Participant
    from labeling.selection import ticket_for

    client.get(reverse("labeling:classify", args=[workflow.project.slug, workflow.slug]))
    volunteer = Participant.objects.get(pk=client.session["participant_id"])
    return client.post(
        reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug]),
        {
            "subject": subject.pk,
            "key": str(uuid.uuid4()),
            "answer": answer,
            "ticket": ticket_for(workflow, subject, volunteer),
        },
        HTTP_HX_REQUEST="true",
    ).content.decode()


def test_feedback_after_a_gold_subject_says_right_or_wrong_and_shows_the_guide(client, workflow):
    right = new_subject(workflow, "g1", gold_label="bogus", gold_subtype="cosmic_ray")
    wrong = new_subject(workflow, "g2", gold_label="real", gold_subtype="variable_star")
    html = vote_on(client, workflow, right, "bogus")
    assert 'data-testid="feedback"' in html and "Well spotted!" in html
    assert "the experts said <strong>bogus</strong> — Cosmic ray" in html
    assert SUBTYPE_DESCRIPTIONS["cosmic_ray"][:60] in html

    html = vote_on(client, workflow, wrong, "bogus")
    assert "Not quite." in html and "the experts said <strong>real</strong> — Variable star" in html
    assert SUBTYPE_DESCRIPTIONS["variable_star"][:60] in html


def test_no_answer_is_revealed_after_an_ordinary_subject(client, workflow):
    ordinary = new_subject(workflow, "o", truth_label="real", truth_subtype="nuclear_transient")
    new_subject(workflow, "next")
    html = vote_on(client, workflow, ordinary, "bogus")
    assert 'data-testid="feedback"' not in html
    assert "experts said" not in html and "Nuclear transient" not in html and "Not quite" not in html


def test_seed_gold_from_truth_takes_both_kinds_and_skips_holdout(workflow):
    for i in range(6):
        new_subject(workflow, f"r{i}", truth_label="real", truth_subtype="variable_star")
        new_subject(workflow, f"b{i}", truth_label="bogus", truth_subtype="ghost")
    new_subject(workflow, "held", truth_label="real", is_holdout=True)
    new_subject(workflow, "no-truth")

    assert seed_gold_from_truth(workflow, 5) == 5
    gold = Subject.objects.exclude(gold_label="")
    labels = sorted(gold.values_list("gold_label", flat=True))
    assert labels in (["bogus", "bogus", "real", "real", "real"], ["bogus", "bogus", "bogus", "real", "real"])
    assert all(s.gold_label == s.truth_label and s.gold_by is None for s in gold)
    assert set(gold.values_list("gold_subtype", flat=True)) <= {"variable_star", "ghost"}
    assert not Subject.objects.get(external_id="held").gold_label
    assert seed_gold_from_truth(workflow, 100) == 7  # the rest; never subjects without truth
    assert Subject.objects.exclude(gold_label="").count() == 12


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_expert_labels_with_the_keyboard_in_a_browser(page, live_server, owner, workflow):
    for name in ("a", "b", "c", "d"):
        new_subject(workflow, name, vote_count=1)
    page.goto(f"{live_server.url}{reverse('login')}")
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "owner-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: "login" not in u)
    page.goto(f"{live_server.url}{gold_url(workflow)}")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    shown = []
    for key in ["r", "b", "s", "3"]:
        shown.append(page.get_attribute(".triplet", "data-subject"))
        page.keyboard.press(key)
        page.wait_for_function(
            f"() => document.querySelector('.triplet') === null || document.querySelector('.triplet').dataset.subject !== '{shown[-1]}'"
        )
    assert navigations == []
    labels = dict(Subject.objects.values_list("pk", "gold_label"))
    subtypes = dict(Subject.objects.values_list("pk", "gold_subtype"))
    assert [labels[int(s)] for s in shown] == ["real", "bogus", "", "real"]
    assert subtypes[int(shown[3])] == "nuclear_transient"
    assert page.inner_text("[data-testid=n-gold]").strip() == "3"
